"""Counters of a port (the link) and of a remote port (the session). Plain ints, for metrics/status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PortCounters:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    link_resets: int = 0
    connects: int = 0
    connect_failures: int = 0
    decode_errors: dict[str, int] = field(default_factory=dict)  # ErrorReason value -> count

    def decode_error(self, reason: str) -> None:
        self.decode_errors[reason] = self.decode_errors.get(reason, 0) + 1

    def snapshot(self) -> dict[str, object]:
        d = asdict(self)
        d["decode_errors"] = dict(self.decode_errors)
        return d


@dataclass
class RemotePortCounters:
    logins: int = 0  # PRLI accepted: the session became ready
    logouts: int = 0
    login_failures: int = 0
    commands: int = 0  # submitted by the SCSI layer
    completed: int = 0  # FCP_RSP received and handed back
    requeued: int = 0  # in flight at a link loss/logout, re-sent after relogin
    aborts: int = 0  # ABTS sent
    timeouts: int = 0  # failed because io_timeout passed
    errors: int = 0  # failed for another reason (target gone, protocol error)
    dropped_frames: int = 0  # unknown exchange, transform drop, bad payload, unexpected IU
    rejects_sent: int = 0  # LS_RJT / BA_RJT answered to a protocol violation

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
