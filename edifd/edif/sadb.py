"""The SA database of one session, sans-IO, following qla2xxx EDIF (qla_edif.c; docs/edif.md §4).

Rules:
- 2 slots per direction ("1 slot for in flight traffic, the other is used at re-key time");
  a third SA in one direction is refused (LIMIT) and changes nothing.
- Re-adding an installed SPI with the same cipher, key and salt is idempotent (OK, a fresh
  completion); the same SPI with other material is refused (INVALID_PARAM).
- TX always uses the most recently installed TX SA: installing the new TX SA *is* the switch.
- Rekey order: new RX, new TX, delete old TX (immediate), delete old RX — deferred while another
  RX SA exists, until `rx_delete_after_frames` (3) frames verified on that other SA or
  `rx_delete_delay` (20 s) passed. FORCE_DELETE skips the delay.
- A delete of an SPI we do not hold succeeds (qla2xxx fakes success too): deletes are idempotent.
- `both_confirmed` (an RX and a TX SA installed) is the condition for AUTH_OK.
Time comes in as `now` arguments (any monotonic float seconds); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from edifd.proto import Cipher, SaDirection, SaFlags, SaStatus, SaUpdate, Status

from .counters import EspCounters
from .errors import EdifError
from .events import DeleteCause, DeleteRx, Event, SaUpdateDone
from .replay import DEFAULT_WINDOW, ReplayWindow
from .sa import SecurityAssociation, sa_problem

SLOTS_PER_DIRECTION = 2
RX_DELETE_DELAY = 20.0  # qla2xxx RX_DELAY_DELETE_TIMEOUT
RX_DELETE_AFTER_FRAMES = 3  # qla2xxx EDIF_RX_DELETE_FILTER_COUNT
_NO_FLAGS = SaFlags(0)


@dataclass(frozen=True)
class SaResult:
    """The answer to an SA_UPDATE: the RESPONSE status, a human-readable detail, and the events
    (SA_UPDATE_COMPL etc.) it caused now. A refusal carries no events and changed nothing."""

    status: Status
    detail: str = ""
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass
class _PendingRxDelete:
    spi: int
    deadline: float
    flags: SaFlags
    seen: int = 0  # frames verified on the other RX SA since the delete was requested


def _refuse(status: Status, detail: str) -> SaResult:
    return SaResult(status, detail)


class SaDatabase:
    """SAs of one session, per direction, with qla2xxx's install/rekey/delete semantics."""

    def __init__(
        self,
        *,
        replay_window: int = DEFAULT_WINDOW,
        rx_delete_delay: float = RX_DELETE_DELAY,
        rx_delete_after_frames: int = RX_DELETE_AFTER_FRAMES,
        counters: EspCounters | None = None,
    ) -> None:
        ReplayWindow(replay_window)  # validate now, not at the first install
        if rx_delete_delay < 0 or rx_delete_after_frames < 1:
            raise EdifError("rx_delete_delay must be >= 0 and rx_delete_after_frames >= 1")
        self.replay_window = replay_window
        self.rx_delete_delay = float(rx_delete_delay)
        self.rx_delete_after_frames = rx_delete_after_frames
        self.counters = counters if counters is not None else EspCounters()
        self._sas: dict[SaDirection, list[SecurityAssociation]] = {SaDirection.RX: [], SaDirection.TX: []}
        self._pending: _PendingRxDelete | None = None

    # --- queries -----------------------------------------------------------------------------

    @property
    def tx_sa(self) -> SecurityAssociation | None:
        """The SA outbound frames use: the most recently installed TX SA."""
        tx = self._sas[SaDirection.TX]
        return tx[-1] if tx else None

    def rx_sa(self, spi: int) -> SecurityAssociation | None:
        for sa in self._sas[SaDirection.RX]:
            if sa.spi == spi:
                return sa
        return None

    def sas(self, direction: SaDirection) -> tuple[SecurityAssociation, ...]:
        return tuple(self._sas[direction])

    @property
    def both_confirmed(self) -> bool:
        """An RX and a TX SA are installed: AUTH_OK may let PRLI proceed."""
        return bool(self._sas[SaDirection.RX]) and bool(self._sas[SaDirection.TX])

    @property
    def pending_rx_delete(self) -> int | None:
        """SPI of the old RX SA waiting for its delayed delete, if any."""
        return self._pending.spi if self._pending else None

    def next_deadline(self) -> float | None:
        """When `tick()` next has something to do (for the caller's timer), or None."""
        return self._pending.deadline if self._pending else None

    def snapshot(self) -> dict[str, object]:
        """Status view without key material."""
        return {
            "rx": [sa.snapshot() for sa in self._sas[SaDirection.RX]],
            "tx": [sa.snapshot() for sa in self._sas[SaDirection.TX]],
            "pending_rx_delete": self.pending_rx_delete,
            "both_confirmed": self.both_confirmed,
        }

    def __repr__(self) -> str:
        def spis(d: SaDirection) -> str:
            return ",".join(f"0x{sa.spi:08x}" for sa in self._sas[d]) or "-"

        return f"SaDatabase(rx=[{spis(SaDirection.RX)}], tx=[{spis(SaDirection.TX)}])"

    # --- SA_UPDATE -----------------------------------------------------------------------------

    def apply(self, update: SaUpdate, now: float) -> SaResult:
        """Carry out one SA_UPDATE message body (add or delete)."""
        if SaFlags.DELETE in update.flags:
            return self.delete(update.direction, update.spi, now=now,
                               force=SaFlags.FORCE_DELETE in update.flags, flags=update.flags)
        return self.install(update.direction, update.spi, update.cipher, update.key, update.salt,
                            flags=update.flags)

    def install(
        self,
        direction: SaDirection | int,
        spi: int,
        cipher: Cipher | int,
        key: bytes | bytearray,
        salt: bytes | bytearray,
        *,
        flags: SaFlags = _NO_FLAGS,
    ) -> SaResult:
        """Add an SA (what an SA_UPDATE without DELETE carries)."""
        try:
            direction, cipher, flags = SaDirection(direction), Cipher(cipher), SaFlags(flags)
        except (ValueError, TypeError):
            return _refuse(Status.INVALID_PARAM, "unknown direction, cipher or flags")
        if flags & (SaFlags.DELETE | SaFlags.FORCE_DELETE):
            return _refuse(Status.INVALID_PARAM, "install() does not take DELETE/FORCE_DELETE")
        problem = sa_problem(spi, cipher, key, salt)
        if problem:
            return _refuse(Status.INVALID_PARAM, problem)
        slots = self._sas[direction]
        for sa in slots:
            if sa.spi == spi:
                if sa.same_material(cipher, key, salt):
                    return SaResult(Status.OK, f"{direction.name} SA 0x{spi:08x} already installed",
                                    (SaUpdateDone(direction, spi, SaStatus.SUCCESS, flags),))
                return _refuse(Status.INVALID_PARAM, f"{direction.name} SPI 0x{spi:08x} is installed "
                                                     "with another cipher, key or salt")
        if len(slots) >= SLOTS_PER_DIRECTION:
            held = ", ".join(f"0x{sa.spi:08x}" for sa in slots)
            why = ""
            if direction is SaDirection.RX and self._pending:
                why = f"; 0x{self._pending.spi:08x} is waiting for its delayed delete"
            return _refuse(Status.LIMIT, f"{direction.name} already holds {len(slots)} SAs ({held}){why}")
        sa = SecurityAssociation(direction, spi, cipher, key, salt, window=self.replay_window)
        if direction is SaDirection.TX and slots:
            self.counters.rekeys += 1  # the TX switch of a rekey
        slots.append(sa)
        return SaResult(Status.OK, f"{direction.name} SA 0x{spi:08x} installed",
                        (SaUpdateDone(direction, spi, SaStatus.SUCCESS, flags),))

    def delete(
        self,
        direction: SaDirection | int,
        spi: int,
        *,
        now: float,
        force: bool = False,
        flags: SaFlags | None = None,
    ) -> SaResult:
        """Delete an SA. An RX delete while another RX SA exists is deferred (see the module doc).

        `flags` is echoed in the completion; it defaults to DELETE (+ FORCE_DELETE if `force`).
        """
        try:
            direction = SaDirection(direction)
        except (ValueError, TypeError):
            return _refuse(Status.INVALID_PARAM, "unknown direction")
        if not isinstance(spi, int) or not 0 < spi <= 0xFFFFFFFF:
            return _refuse(Status.INVALID_PARAM, "SPI must be a non-zero 32-bit unsigned int")
        if force and direction is not SaDirection.RX:
            return _refuse(Status.INVALID_PARAM, "FORCE_DELETE applies to RX SAs only")
        if flags is None:
            flags = SaFlags.DELETE | (SaFlags.FORCE_DELETE if force else SaFlags(0))
        done = SaUpdateDone(direction, spi, SaStatus.SUCCESS, flags)
        slots = self._sas[direction]
        sa = next((s for s in slots if s.spi == spi), None)
        if sa is None:
            return SaResult(Status.OK, f"no {direction.name} SA 0x{spi:08x} (nothing to delete)", (done,))
        if direction is SaDirection.TX:
            self._remove(sa)
            return SaResult(Status.OK, f"TX SA 0x{spi:08x} deleted", (done,))
        pending = self._pending
        if pending is not None:
            if pending.spi == spi and not force:
                return SaResult(Status.OK, f"RX SA 0x{spi:08x}: delete already pending")
            if pending.spi != spi and not force:
                return _refuse(Status.RETRY_LATER,
                               f"RX SA 0x{pending.spi:08x} is waiting for its delayed delete; retry after it")
            if pending.spi == spi:
                self._pending = None
        if force or len(slots) == 1:
            self._remove(sa)
            return SaResult(Status.OK, f"RX SA 0x{spi:08x} deleted",
                            (DeleteRx(spi, DeleteCause.REQUESTED), done))
        self._pending = _PendingRxDelete(spi, now + self.rx_delete_delay, flags)
        return SaResult(Status.OK, f"RX SA 0x{spi:08x} delete deferred until {self.rx_delete_after_frames} "
                                   f"frames on the new SA or {self.rx_delete_delay:g} s")

    # --- the delayed RX delete ---------------------------------------------------------------------

    def on_frame_received(self, spi: int) -> list[Event]:
        """A frame verified on RX SA `spi`. Counts toward the delayed delete of the other RX SA."""
        p = self._pending
        if p is None or spi == p.spi:
            return []
        p.seen += 1
        if p.seen < self.rx_delete_after_frames:
            return []
        return self._finish_pending(DeleteCause.NEW_SA_IN_USE)

    def tick(self, now: float) -> list[Event]:
        """Advance time: a delayed RX delete whose deadline passed takes effect."""
        if self._pending is not None and now >= self._pending.deadline:
            return self._finish_pending(DeleteCause.TIMEOUT)
        return []

    def clear(self) -> list[Event]:
        """Session teardown: zeroize every SA. A pending RX delete still gets its completion."""
        events: list[Event] = []
        for sa in list(self._sas[SaDirection.RX]):
            events.append(DeleteRx(sa.spi, DeleteCause.SESSION_CLEARED))
        if self._pending is not None:
            p, self._pending = self._pending, None
            events.append(SaUpdateDone(SaDirection.RX, p.spi, SaStatus.SUCCESS, p.flags))
        for slots in self._sas.values():
            for sa in slots:
                sa.zeroize()
            slots.clear()
        return events

    def _finish_pending(self, cause: DeleteCause) -> list[Event]:
        p = self._pending
        assert p is not None
        self._pending = None
        sa = self.rx_sa(p.spi)
        if sa is not None:
            self._remove(sa)
        return [DeleteRx(p.spi, cause), SaUpdateDone(SaDirection.RX, p.spi, SaStatus.SUCCESS, p.flags)]

    def _remove(self, sa: SecurityAssociation) -> None:
        self._sas[sa.direction].remove(sa)
        sa.zeroize()
