"""An InitiatorSession and a TargetSession joined by the real link codec, with a MemoryMedium LUN:
the sans-IO rig of the HBA session tests (test_hba_session, test_engine_hba, test_edif_hba)."""

from __future__ import annotations

from edifd.fc import FcType, Frame, decode_record, encode_frame
from edifd.hba import Completed, InitiatorSession
from edifd.scsi import MemoryMedium, ScsiCommand, ScsiDisk, SenseData
from edifd.target import Execute, TargetSession

HI, LO = 0x21000000000000F0, 0x2100000000000010
NN = 0x2000000000000001


class Wire:
    """Initiator and target sessions joined by encode/decode (the real link codec), with a
    MemoryMedium LUN 0 behind the target. `stall` keeps Execute events unanswered."""

    def __init__(self, i_wwpn: int = HI, t_wwpn: int = LO, **kw: object) -> None:
        t_kw = kw.pop("target_kw", {})
        self.i = InitiatorSession(i_wwpn, NN, login_timeout=2.0, abts_timeout=2.0, **kw)  # type: ignore[arg-type]
        self.t = TargetSession(t_wwpn, NN + 1, [0], **t_kw)  # type: ignore[arg-type]
        self.disk = ScsiDisk(MemoryMedium(4096, 512))
        self.now = 0.0
        self.stall = False
        self.held: list[Execute] = []
        self.log: list[tuple[str, Frame]] = []
        self.done: dict[int, object] = {}
        self.other: list[object] = []

    def up(self) -> None:
        self.to_target(self.i.connected(self.now))

    def to_target(self, frames: list[Frame]) -> None:
        for f in frames:
            f = decode_record(encode_frame(f))
            self.log.append(("i", f))
            out = self.t.receive(f)
            for ev in self.t.take_events():
                if isinstance(ev, Execute):
                    if self.stall:
                        self.held.append(ev)
                    else:
                        out += self.t.complete(ev.rx_id, self.disk.execute(ev.command))  # type: ignore[arg-type]
            self.to_initiator(out)
        self.drain()

    def to_initiator(self, frames: list[Frame]) -> None:
        for f in frames:
            f = decode_record(encode_frame(f))
            self.log.append(("t", f))
            self.to_target(self.i.receive(f, self.now))

    def drain(self) -> None:
        for ev in self.i.take_events():
            if isinstance(ev, Completed):
                self.done[ev.tag] = ev.response
            else:
                self.other.append(ev)

    def submit(self, tag: int, cmd: ScsiCommand, timeout: float = 10.0, lun: int = 0) -> None:
        self.to_target(self.i.submit(tag, lun, cmd, self.now, timeout))

    def tick(self, dt: float) -> None:
        self.now += dt
        self.to_target(self.i.poll(self.now))

    def els_codes(self, side: str) -> list[int]:
        return [f.payload[0] for s, f in self.log if s == side and f.header.type == FcType.ELS]


def sense_of(resp: object) -> tuple[int, int, int]:
    s = SenseData.parse(resp.sense)  # type: ignore[attr-defined]
    return s.key, s.asc, s.ascq
