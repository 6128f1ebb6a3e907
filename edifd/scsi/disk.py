"""ScsiDisk: a direct-access logical unit, sans-IO. CDB in, (status, data, sense) out.

Rules every response follows (transports rely on them):
- `data` is exactly `cmd.data_in_len` bytes: the command's data, truncated to its allocation
  length, then truncated or zero-filled to the buffer. No stale byte ever leaves. `data_len` says
  how many leading bytes are real data (0 on errors), for transports that report residuals.
- Errors are CHECK CONDITION with 18 bytes of fixed-format sense; nothing raises out of `execute`.
- READ data longer than the buffer is truncated: the transport's buffer size is authoritative (the
  medium can see `req.command.data_in_len` if truncation matters to it, as for the control LUN).
- WRITE data-out shorter than the transfer length is rejected (05/24/00, pointer at TRANSFER
  LENGTH) before the medium is touched; extra data-out bytes are ignored.

Threads: one owner (the ring loop or the FCP target task) calls execute. A medium may resolve a
Pending from another thread; the completion then runs there, and only builds bytes and records the
sense for REQUEST SENSE. REQUEST SENSE is per logical unit, not per I_T nexus (one initiator per LU).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable

from .command import Pending, ScsiCommand, ScsiResponse, Status
from .commands import Opcode, lookup, report_supported_opcodes
from .identity import Identity
from .inquiry import standard_inquiry, vpd_page
from .luns import fit_data_in, report_luns_payload
from .medium import IoKind, IoRequest, Medium
from .mode import ModeState, mode_sense
from .sense import Asc, CheckCondition, SenseKey, invalid_field, sense

log = logging.getLogger(__name__)

DEFAULT_MAX_TRANSFER_BYTES = 1 << 20
BLOCK_SIZES = (512, 1024, 2048, 4096)

_NO_SENSE = sense(SenseKey.NO_SENSE, 0, 0)
_INTERNAL = sense(SenseKey.HARDWARE_ERROR, *Asc.INTERNAL_TARGET_FAILURE.value)

# opcode -> (LBA offset, LBA format, transfer-length offset, length format) for 10/12/16-byte I/O.
_IO_LAYOUT: dict[int, tuple[int, str, int, str]] = {}
for _op in (Opcode.READ_10, Opcode.WRITE_10, Opcode.VERIFY_10, Opcode.SYNCHRONIZE_CACHE_10):
    _IO_LAYOUT[_op] = (2, ">I", 7, ">H")
for _op in (Opcode.READ_12, Opcode.WRITE_12, Opcode.VERIFY_12):
    _IO_LAYOUT[_op] = (2, ">I", 6, ">I")
for _op in (Opcode.READ_16, Opcode.WRITE_16, Opcode.VERIFY_16, Opcode.SYNCHRONIZE_CACHE_16):
    _IO_LAYOUT[_op] = (2, ">Q", 10, ">I")


def _io_fields(cdb: bytes) -> tuple[int, int, int]:
    """(LBA, block count, byte offset of the transfer length field) of an I/O CDB."""
    op = cdb[0]
    if op in (Opcode.READ_6, Opcode.WRITE_6):
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return lba, cdb[4] or 256, 4  # SBC-3: TRANSFER LENGTH 0 means 256 blocks in (6) CDBs
    lba_off, lba_fmt, len_off, len_fmt = _IO_LAYOUT[op]
    return struct.unpack_from(lba_fmt, cdb, lba_off)[0], struct.unpack_from(len_fmt, cdb, len_off)[0], len_off


def _first_difference(a: bytes, b: bytes) -> int:
    step = 4096
    for off in range(0, len(a), step):
        if a[off : off + step] != b[off : off + step]:
            return next(i for i in range(off, off + step) if a[i] != b[i])
    raise ValueError("buffers are equal")


class ScsiDisk:
    """One logical unit over a pluggable `Medium`.

    identity: INQUIRY/VPD identity.
    read_only: WRITEs fail with DATA PROTECT / WRITE PROTECTED (07/27/00); WP set in MODE SENSE.
    write_cache: WCE in the Caching page; default: the medium's optional `write_cache` attribute.
    max_transfer_bytes: MAXIMUM TRANSFER LENGTH (VPD 0xB0) in bytes; larger I/O gets 05/24/00.
    luns: answer for REPORT LUNS if one reaches us (normally the transport answers it).
    """

    def __init__(
        self,
        medium: Medium,
        identity: Identity | None = None,
        *,
        read_only: bool = False,
        write_cache: bool | None = None,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
        luns: Iterable[int] = (0,),
    ) -> None:
        if medium.block_size not in BLOCK_SIZES:
            raise ValueError(f"medium block size {medium.block_size} not in {BLOCK_SIZES}")
        if medium.num_blocks < 1:
            raise ValueError("medium must have at least one block")
        if max_transfer_bytes < 4096 or max_transfer_bytes % 4096:
            raise ValueError("max_transfer_bytes must be a positive multiple of 4096")
        self.medium = medium
        self.identity = identity if identity is not None else Identity()
        self.read_only = read_only
        self.write_cache = bool(getattr(medium, "write_cache", False)) if write_cache is None else write_cache
        self.max_transfer_bytes = max_transfer_bytes
        self.luns = tuple(luns)
        self.internal_errors = 0
        self._sense: bytes = b""  # sense of the last CHECK CONDITION, until REQUEST SENSE takes it
        self._handlers: dict[int, Callable[[ScsiCommand], bytes | ScsiResponse | Pending]] = {
            Opcode.TEST_UNIT_READY: lambda cmd: b"",
            Opcode.REQUEST_SENSE: self._request_sense,
            Opcode.INQUIRY: self._inquiry,
            Opcode.MODE_SENSE_6: self._mode_sense,
            Opcode.MODE_SENSE_10: self._mode_sense,
            Opcode.START_STOP_UNIT: self._start_stop_unit,
            Opcode.READ_CAPACITY_10: self._read_capacity_10,
            Opcode.SERVICE_ACTION_IN_16: self._read_capacity_16,  # the only SA lookup() accepts
            Opcode.MAINTENANCE_IN: self._report_supported_opcodes,
            Opcode.REPORT_LUNS: lambda cmd: report_luns_payload(cmd.cdb, self.luns),
            Opcode.SYNCHRONIZE_CACHE_10: self._synchronize_cache,
            Opcode.SYNCHRONIZE_CACHE_16: self._synchronize_cache,
        }
        for op in (Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16):
            self._handlers[op] = self._read
        for op in (Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16):
            self._handlers[op] = self._write
        for op in (Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16):
            self._handlers[op] = self._verify

    # --- the transport contract -------------------------------------------------------------------

    def execute(self, cmd: ScsiCommand) -> ScsiResponse | Pending:
        """Run one command. Returns the response, or a Pending the medium resolves later (the
        Pending resolves with a response that already follows all the rules above)."""
        try:
            try:
                spec = lookup(bytes(cmd.cdb))
                result = self._handlers[spec.opcode](cmd)
            except CheckCondition as e:
                return self._check(cmd, e.sense)
            except Exception:
                return self._internal(cmd)
            if isinstance(result, ScsiResponse | Pending):
                return result
            return self._good(cmd, result)
        except Exception:
            # Only a malformed ScsiCommand (e.g. data_in_len not an int) gets here: a transport bug.
            log.error("malformed ScsiCommand from the transport: %s", type(cmd).__name__)
            return ScsiResponse(Status.CHECK_CONDITION, b"", _INTERNAL, data_len=0)

    def abort(self, cmd: ScsiCommand) -> None:
        """The transport ended a command we left Pending (TMR abort, stop, ring reset): its data
        never reached the initiator. Forwarded to the medium's optional `abort(cmd)`, so a control
        LUN can re-deliver what that READ carried. The Pending may still resolve later; harmless."""
        hook = getattr(self.medium, "abort", None)
        if hook is not None:
            hook(cmd)

    @property
    def pending_sense(self) -> bytes:
        """Sense that the next REQUEST SENSE returns (empty: none)."""
        return self._sense

    # --- response builders ------------------------------------------------------------------------

    @staticmethod
    def _good(cmd: ScsiCommand, data: bytes) -> ScsiResponse:
        out = fit_data_in(data, cmd.data_in_len)
        return ScsiResponse(Status.GOOD, out, data_len=min(len(data), len(out)))

    def _check(self, cmd: ScsiCommand, sense_data: bytes) -> ScsiResponse:
        self._sense = sense_data
        return ScsiResponse(Status.CHECK_CONDITION, fit_data_in(b"", cmd.data_in_len), sense_data, data_len=0)

    def _internal(self, cmd: ScsiCommand) -> ScsiResponse:
        # A bug in a medium or here: tell the initiator 04/44/00, log the first traceback only.
        self.internal_errors += 1
        op = cmd.cdb[0] if isinstance(cmd.cdb, bytes | bytearray) and cmd.cdb else -1
        if self.internal_errors == 1:
            log.exception("internal target failure on opcode %#x (further ones logged at debug)", op)
        else:
            log.debug("internal target failure #%d on opcode %#x", self.internal_errors, op, exc_info=True)
        return self._check(cmd, _INTERNAL)

    def _complete(
        self, cmd: ScsiCommand, outcome: bytes | None | Pending, finish: Callable[[bytes], bytes]
    ) -> bytes | ScsiResponse | Pending:
        """Turn a medium's answer into data-in, now or when its Pending resolves."""
        if outcome is None:
            return finish(b"")
        if isinstance(outcome, bytes | bytearray | memoryview):
            return finish(bytes(outcome))
        if not isinstance(outcome, Pending):
            raise TypeError(f"medium returned {type(outcome).__name__}, not bytes or Pending")
        outer = Pending(cmd)

        def done(resp: ScsiResponse) -> None:
            try:
                if resp.status != Status.GOOD:
                    final = self._passthrough(cmd, resp)
                else:
                    final = self._good(cmd, finish(bytes(resp.data)))
            except CheckCondition as e:
                final = self._check(cmd, e.sense)
            except Exception:
                final = self._internal(cmd)
            outer.resolve(final)

        outcome.on_done(done)
        return outer.result if outer.result is not None else outer

    def _passthrough(self, cmd: ScsiCommand, resp: ScsiResponse) -> ScsiResponse:
        status = Status(resp.status)
        if status == Status.CHECK_CONDITION:
            self._sense = bytes(resp.sense)
        return ScsiResponse(status, fit_data_in(b"", cmd.data_in_len), bytes(resp.sense), data_len=0)

    # --- SPC commands -----------------------------------------------------------------------------

    def _request_sense(self, cmd: ScsiCommand) -> bytes:
        if cmd.cdb[1] & 0x01:  # DESC: we only produce fixed format (as LIO does)
            raise invalid_field(1, 0)
        data, self._sense = (self._sense or _NO_SENSE), b""
        return data[: cmd.cdb[4]]

    def _inquiry(self, cmd: ScsiCommand) -> bytes:
        cdb = cmd.cdb
        alloc = struct.unpack_from(">H", cdb, 3)[0]
        if not cdb[1] & 0x01:
            if cdb[2]:
                raise invalid_field(2)  # PAGE CODE without EVPD
            return standard_inquiry(self.identity)[:alloc]
        max_blocks = self.max_transfer_bytes // self.medium.block_size
        return vpd_page(cdb[2], self.identity, max_transfer_blocks=max_blocks)[:alloc]

    def _mode_state(self) -> ModeState:
        return ModeState(self.medium.num_blocks, self.medium.block_size, self.write_cache, self.read_only)

    def _mode_sense(self, cmd: ScsiCommand) -> bytes:
        cdb = cmd.cdb
        ten = cdb[0] == Opcode.MODE_SENSE_10
        alloc = struct.unpack_from(">H", cdb, 7)[0] if ten else cdb[4]
        return mode_sense(cdb, self._mode_state(), ten=ten)[:alloc]

    def _report_supported_opcodes(self, cmd: ScsiCommand) -> bytes:
        alloc = struct.unpack_from(">I", cmd.cdb, 6)[0]
        return report_supported_opcodes(cmd.cdb)[:alloc]

    # --- SBC commands -----------------------------------------------------------------------------

    def _start_stop_unit(self, cmd: ScsiCommand) -> bytes:
        # No motor and no removable medium: START and STOP are accepted and change nothing, so a
        # guest that stops the disk at shutdown can still use it after a reboot without START.
        cdb = cmd.cdb
        if cdb[4] >> 4:
            raise invalid_field(4, 7)  # POWER CONDITION: no power-condition support
        if cdb[3] & 0x0F:
            raise invalid_field(3, 3)  # POWER CONDITION MODIFIER
        if cdb[4] & 0x02:
            raise invalid_field(4, 1)  # LOEJ: nothing to load or eject
        return b""

    def _read_capacity_10(self, cmd: ScsiCommand) -> bytes:
        last = self.medium.num_blocks - 1
        return struct.pack(">II", min(last, 0xFFFFFFFF), self.medium.block_size)

    def _read_capacity_16(self, cmd: ScsiCommand) -> bytes:
        alloc = struct.unpack_from(">I", cmd.cdb, 10)[0]
        # P_TYPE/PROT_EN 0, LBPPBE 0 (physical = logical block), LBPME/LBPRZ 0 (no UNMAP).
        data = struct.pack(">QI", self.medium.num_blocks - 1, self.medium.block_size).ljust(32, b"\x00")
        return data[:alloc]

    def _io_request(self, cmd: ScsiCommand, kind: IoKind) -> tuple[IoRequest, int]:
        """Parse and range-check an I/O CDB; returns the request and its TRANSFER LENGTH offset."""
        cdb = cmd.cdb
        lba, nblocks, len_off = _io_fields(cdb)
        num = self.medium.num_blocks
        # An LBA past the end is out of range even with zero blocks (libiscsi *_0blocks tests).
        if lba >= num or lba + nblocks > num:
            raise CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
        if kind is not IoKind.FLUSH and nblocks * self.medium.block_size > self.max_transfer_bytes:
            raise invalid_field(len_off)
        flags = 0 if cdb[0] in (Opcode.READ_6, Opcode.WRITE_6) else cdb[1]
        req = IoRequest(kind, lba, nblocks, fua=bool(flags & 0x08), dpo=bool(flags & 0x10), command=cmd)
        return req, len_off

    def _read(self, cmd: ScsiCommand) -> bytes | ScsiResponse | Pending:
        req, _ = self._io_request(cmd, IoKind.READ)
        if req.nblocks == 0:
            return b""
        size = req.nblocks * self.medium.block_size
        return self._complete(cmd, self.medium.read(req), lambda d: d[:size].ljust(size, b"\x00"))

    def _write(self, cmd: ScsiCommand) -> bytes | ScsiResponse | Pending:
        req, len_off = self._io_request(cmd, IoKind.WRITE)
        if self.read_only:
            raise CheckCondition.of(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
        if req.nblocks == 0:
            return b""
        size = req.nblocks * self.medium.block_size
        if len(cmd.data_out) < size:
            raise invalid_field(len_off)
        outcome = self.medium.write(req, bytes(cmd.data_out[:size]))
        return self._complete(cmd, outcome if isinstance(outcome, Pending) else None, lambda d: b"")

    def _verify(self, cmd: ScsiCommand) -> bytes | ScsiResponse | Pending:
        req, len_off = self._io_request(cmd, IoKind.VERIFY)
        bytchk = (cmd.cdb[1] >> 1) & 0x03
        if bytchk == 0b10:
            raise invalid_field(1, 2)
        # BYTCHK=0 asks for a medium check only; our media have no latent errors to find, and a
        # control-LUN medium must not mistake it for a READ, so it never reaches the medium.
        if req.nblocks == 0 or bytchk == 0:
            return b""
        bs = self.medium.block_size
        size = req.nblocks * bs
        need = size if bytchk == 0b01 else bs  # 11b: one block compared against every block
        if len(cmd.data_out) < need:
            raise invalid_field(len_off)
        expected = bytes(cmd.data_out[:size]) if bytchk == 0b01 else bytes(cmd.data_out[:bs]) * req.nblocks

        def compare(data: bytes) -> bytes:
            got = data[:size].ljust(size, b"\x00")
            if got != expected:
                # INFORMATION = offset of the first differing byte in the data-out buffer
                # (SBC-3 5.27); for 11b that is the offset into the single block sent.
                off = _first_difference(got, expected)
                raise CheckCondition.of(
                    SenseKey.MISCOMPARE,
                    Asc.MISCOMPARE_DURING_VERIFY,
                    information=off if bytchk == 0b01 else off % bs,
                )
            return b""

        return self._complete(cmd, self.medium.read(req), compare)

    def _synchronize_cache(self, cmd: ScsiCommand) -> bytes | ScsiResponse | Pending:
        req, _ = self._io_request(cmd, IoKind.FLUSH)
        outcome = self.medium.flush(req)
        if not cmd.cdb[1] & 0x02:
            return self._complete(cmd, outcome if isinstance(outcome, Pending) else None, lambda d: b"")
        # IMMED: status as soon as the CDB is valid; a later flush failure can only be logged.
        if isinstance(outcome, Pending):
            outcome.on_done(_log_immed_failure)
        return b""


def _log_immed_failure(resp: ScsiResponse) -> None:
    if resp.status != Status.GOOD:
        log.warning("SYNCHRONIZE CACHE with IMMED failed after GOOD was sent: status %s", resp.status)
