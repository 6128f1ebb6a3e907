"""Between the ring and the SCSI layer: commands out, completions in (sans-IO).

The ring's owner calls `service()` whenever the UIO fd or the wakeup fd is readable. Each fetched
command becomes a `ScsiCommand` for `executor.execute()`. An immediate `ScsiResponse` is
completed at once; a `Pending` may be resolved later from any thread: its callback only appends
to a queue and calls `wake()` (the edge makes the owner's poll return), and the owner writes the
completion into the ring on its next `service()`. Only the owner ever touches the ring.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edifd.scsi.command import Pending, ScsiCommand, ScsiResponse, Status
from edifd.tcmu.ring import SENSE_BUFFER_SIZE, Ring, RingCommand, TmrNotice

log = logging.getLogger(__name__)

# Opcodes whose buffer flows initiator -> target (the kernel copied the payload into the data
# area). The TCMU entry does not carry the direction, so it is derived from the CDB; a data-out
# opcode missing here would only be handed to the executor without its payload.
DATA_OUT_OPCODES = frozenset({
    0x04,  # FORMAT UNIT
    0x0A,  # WRITE(6)
    0x15,  # MODE SELECT(6)
    0x1D,  # SEND DIAGNOSTIC
    0x2A,  # WRITE(10)
    0x2E,  # WRITE AND VERIFY(10)
    0x2F,  # VERIFY(10) (data only with BYTCHK)
    0x3B,  # WRITE BUFFER
    0x41,  # WRITE SAME(10)
    0x42,  # UNMAP
    0x4C,  # LOG SELECT
    0x55,  # MODE SELECT(10)
    0x5F,  # PERSISTENT RESERVE OUT
    0x83,  # EXTENDED COPY
    0x89,  # COMPARE AND WRITE
    0x8A,  # WRITE(16)
    0x8E,  # WRITE AND VERIFY(16)
    0x8F,  # VERIFY(16)
    0x93,  # WRITE SAME(16)
    0xA4,  # MAINTENANCE OUT
    0xAA,  # WRITE(12)
    0xAE,  # WRITE AND VERIFY(12)
    0xAF,  # VERIFY(12)
    0xB5,  # SECURITY PROTOCOL OUT
})

# HARDWARE ERROR / INTERNAL TARGET FAILURE, fixed format, for an executor that raised.
_INTERNAL_FAILURE = ScsiResponse(Status.CHECK_CONDITION, sense=bytes(
    [0x70, 0, 0x04, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0]))
BUSY = ScsiResponse(Status.BUSY)


class Executor(Protocol):
    """What the ring needs from the SCSI layer (edifd.scsi.ScsiDisk satisfies it).

    Optionally an executor may define `abort(cmd: ScsiCommand) -> None`: it is called when a
    command it left Pending is ended without it (TMR abort, stop, ring reset), so the medium can
    tell that the data never reached the initiator.
    """

    def execute(self, cmd: ScsiCommand) -> ScsiResponse | Pending: ...


@dataclass
class DispatchStats:
    fetched: int = 0
    completed: int = 0
    parked: int = 0  # answered with a Pending
    aborted: int = 0  # named by a TMR entry
    forced: int = 0  # completed by complete_all (stop, block)
    late: int = 0  # Pending resolved after its command had been aborted or forced
    failures: int = 0  # executor raised or broke the contract


@dataclass(eq=False)
class _Slot:
    ring_cmd: RingCommand
    scsi_cmd: ScsiCommand
    data_out: bool  # True: the buffer is Data-Out and never written back
    bidi: bool
    pending: bool = False


def build_command(ring_cmd: RingCommand, data_out: bytes) -> ScsiCommand:
    """The ScsiCommand for a ring command whose Data-Out (if any) was already copied out.

    BIDI: Data-In is the bidi iovecs. Data-out opcodes: no Data-In at all. Anything else: the
    whole buffer is Data-In, and the answer must fill it.
    """
    if ring_cmd.bidi_iovecs:
        data_in_len = ring_cmd.bidi_len
    elif data_out or ring_cmd.cdb[0] in DATA_OUT_OPCODES:
        data_in_len = 0
    else:
        data_in_len = ring_cmd.data_len
    return ScsiCommand(cdb=ring_cmd.cdb, data_out=data_out, data_in_len=data_in_len, tag=ring_cmd.cmd_id)


class RingDispatcher:
    """Feeds one ring's commands to an executor and writes the answers back."""

    def __init__(self, ring: Ring, executor: Executor, wake: Callable[[], None] = lambda: None) -> None:
        self.ring = ring
        self.executor = executor
        self.stats = DispatchStats()
        self._wake = wake
        self._slots: dict[int, _Slot] = {}
        # deque.append/popleft are atomic under the GIL: the only object other threads touch.
        self._inbox: collections.deque[tuple[_Slot, ScsiResponse]] = collections.deque()

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    @property
    def parked(self) -> int:
        return sum(1 for s in self._slots.values() if s.pending)

    # -- owner side -------------------------------------------------------------------------------
    def service(self) -> None:
        """Fetch and execute every new entry, then apply completions that arrived.

        A RingError from the ring propagates (after the good entries before the bad one were
        handled); the edge then resets the ring and calls `reset()`.
        """
        self.run_completions()
        while True:
            items = self.ring.fetch()
            if not items:
                break
            for item in items:
                if isinstance(item, TmrNotice):
                    self._on_tmr(item)
                else:
                    self._on_cmd(item)
        self.run_completions()

    def run_completions(self) -> int:
        """Write every queued Pending result into the ring; returns how many were applied."""
        done = 0
        while self._inbox:
            slot, response = self._inbox.popleft()
            if self._slots.get(slot.ring_cmd.cmd_id) is not slot:
                self.stats.late += 1  # aborted/forced meanwhile: its data pages may be reused
                continue
            self._finish(slot, response)
            done += 1
        return done

    def complete_all(self, response: ScsiResponse = BUSY) -> int:
        """End every in-flight command with `response` (default BUSY: the initiator retries
        later). Used on stop and before a ring reset so LUN removal never waits on us."""
        slots = list(self._slots.values())
        for slot in slots:
            self._tell_abort(slot)
            self._finish(slot, ScsiResponse(response.status, b"", response.sense))
            self.stats.forced += 1
        self._inbox.clear()
        return len(slots)

    def reset(self, ring: Ring) -> None:
        """The kernel failed everything on the old ring (reset_ring); start over on `ring`."""
        for slot in self._slots.values():
            self._tell_abort(slot)
        self._slots.clear()
        self._inbox.clear()
        self.ring = ring

    # -- internals --------------------------------------------------------------------------------
    def _on_cmd(self, rc: RingCommand) -> None:
        self.stats.fetched += 1
        bidi = bool(rc.bidi_iovecs)
        data_out_dir = bidi or rc.cdb[0] in DATA_OUT_OPCODES
        payload = self.ring.read_data(rc) if data_out_dir else b""
        cmd = build_command(rc, payload)
        slot = _Slot(rc, cmd, data_out=data_out_dir and not bidi, bidi=bidi)
        self._slots[rc.cmd_id] = slot
        try:
            result: Any = self.executor.execute(cmd)
            if isinstance(result, Pending):
                slot.pending = True
                self.stats.parked += 1
                result.on_done(functools.partial(self._post, slot))
                return
            if not isinstance(result, ScsiResponse):
                raise TypeError(f"execute() returned {type(result).__name__}")
        except Exception as exc:
            self.stats.failures += 1
            log.error("executor failed on opcode %#04x (cmd_id %d): %s", rc.cdb[0], rc.cmd_id,
                      type(exc).__name__)
            log.debug("executor failure", exc_info=True)
            if self._slots.get(rc.cmd_id) is slot:
                self._finish(slot, _INTERNAL_FAILURE)
            return
        self._finish(slot, result)

    def _post(self, slot: _Slot, response: ScsiResponse) -> None:
        """Pending callback; may run on any thread."""
        self._inbox.append((slot, response))
        self._wake()

    def _on_tmr(self, notice: TmrNotice) -> None:
        for cmd_id in notice.cmd_ids:
            slot = self._slots.get(cmd_id)
            if slot is None:
                continue  # completed before the kernel's abort reached us
            self._tell_abort(slot)
            # The core ignores the status of an aborted command; its buffer is never written.
            del self._slots[cmd_id]
            self.ring.complete(cmd_id, Status.TASK_ABORTED)
            self.stats.aborted += 1

    def _tell_abort(self, slot: _Slot) -> None:
        abort = getattr(self.executor, "abort", None)
        if slot.pending and abort is not None:
            try:
                abort(slot.scsi_cmd)
            except Exception as exc:
                log.error("executor abort hook failed: %s", type(exc).__name__)

    def _finish(self, slot: _Slot, response: ScsiResponse) -> None:
        rc = slot.ring_cmd
        del self._slots[rc.cmd_id]
        try:
            status = int(response.status)
            sense = bytes(response.sense[:SENSE_BUFFER_SIZE])
            data = bytes(response.data)
            valid = response.valid_len if response.data_len is not None else None
            if not 0 <= status <= 0xFF:
                raise ValueError(status)
        except Exception:
            self.stats.failures += 1
            log.error("malformed response for opcode %#04x (cmd_id %d)", rc.cdb[0], rc.cmd_id)
            status, sense, data, valid = _INTERNAL_FAILURE.status, _INTERNAL_FAILURE.sense, b"", 0
        read_len = None
        if not slot.data_out:
            # Always fill the whole Data-In buffer, even on error: pages are reused. The kernel
            # still transfers only read_len bytes and reports the rest as residual underflow
            # (what initiators such as libiscsi's tests expect of a short INQUIRY or VPD page).
            self.ring.write_data(rc, data, bidi=slot.bidi)
            read_len = valid
        self.ring.complete(rc.cmd_id, status, sense, read_len=read_len)
        self.stats.completed += 1
