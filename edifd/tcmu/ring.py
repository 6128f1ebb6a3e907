"""The TCMU command ring as a pure codec over a writable buffer (sans-IO).

Layout (Linux include/uapi/linux/target_core_user.h, offsets checked with gcc on x86-64):

    0      tcmu_mailbox (128 bytes)   version@0 flags@2 cmdr_off@4 cmdr_size@8 cmd_head@12 cmd_tail@64
    128    command ring (cmdr_size)   entries, never wrapping: the kernel pads to the end (TCMU_OP_PAD)
    128+cmdr_size  data area          pages referenced by the entries' iovecs (offsets from the map start)

The kernel produces entries and moves `cmd_head`; we keep a private fetch pointer, copy every
command out (its slot will be overwritten by out-of-order completions), and complete with the
tcmulib algorithm: skip PAD/TMR at `cmd_tail`, write id/status/sense into the tail slot, advance.
The owner then tells the kernel with one 4-byte write per batch (done by the I/O edge, not here).

All multi-byte fields are host order; TCMU only exists on little-endian hosts we support
(x86-64, aarch64), so the formats say `<` explicitly.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from edifd.tcmu.errors import RingError

# -- struct tcmu_mailbox -------------------------------------------------------------------------
MAILBOX_VERSION = 2
MAILBOX_SIZE = 128  # == CMDR_OFF; cmd_tail is __aligned__(64) so the struct is two cache lines
MB_VERSION = 0
MB_FLAGS = 2
MB_CMDR_OFF = 4
MB_CMDR_SIZE = 8
MB_CMD_HEAD = 12
MB_CMD_TAIL = 64  # not 16: the field has its own cache line (ALIGN_SIZE 64)

# -- struct tcmu_cmd_entry (outer struct packed, inner req/rsp union not) -------------------------
ENT_LEN_OP = 0
ENT_CMD_ID = 4
ENT_KFLAGS = 6
ENT_UFLAGS = 7
REQ_IOV_CNT = 8
REQ_IOV_BIDI_CNT = 12
REQ_IOV_DIF_CNT = 16
REQ_CDB_OFF = 24  # u64, 8-aligned inside the unpacked req struct (not 20)
REQ_IOV = 48  # struct iovec[]: u64 base (offset from the map start), u64 len
IOVEC_SIZE = 16
RSP_SCSI_STATUS = 8
RSP_READ_LEN = 12
RSP_SENSE = 16
SENSE_BUFFER_SIZE = 96  # TRANSPORT_SENSE_BUFFER
CMD_ENTRY_SIZE = 112  # sizeof(struct tcmu_cmd_entry); minimum size of a CMD entry
ENTRY_ALIGN = 8  # TCMU_OP_ALIGN_SIZE; the low 3 bits of len_op carry the opcode
OP_MASK = 0x7

# -- struct tcmu_tmr_entry ------------------------------------------------------------------------
TMR_TYPE = 8
TMR_CMD_CNT = 12
TMR_CMD_IDS = 32

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IOVEC = struct.Struct("<QQ")
_MAILBOX_HEAD = struct.Struct("<HHII")  # version, flags, cmdr_off, cmdr_size
_RSP = struct.Struct("<BBHI")  # scsi_status, pad, pad, read_len

# The layout is fixed by the kernel ABI; make a typo here impossible to miss.
assert _MAILBOX_HEAD.size == MB_CMD_HEAD and MB_CMD_TAIL % 64 == 0 and MB_CMD_TAIL + 4 <= MAILBOX_SIZE
assert REQ_IOV + 4 * IOVEC_SIZE == CMD_ENTRY_SIZE and RSP_SENSE + SENSE_BUFFER_SIZE == CMD_ENTRY_SIZE
assert REQ_CDB_OFF % 8 == 0 and _RSP.size == RSP_SENSE - RSP_SCSI_STATUS


class Op(enum.IntEnum):
    """Entry opcodes (low 3 bits of len_op)."""

    PAD = 0
    CMD = 1
    TMR = 2


class MailboxFlag(enum.IntFlag):
    """Kernel capabilities advertised in tcmu_mailbox.flags."""

    OOOC = 1 << 0  # out-of-order completion
    READ_LEN = 1 << 1
    TMR = 1 << 2
    KEEP_BUF = 1 << 3


class UFlag(enum.IntFlag):
    """Flags userspace sets in an entry's uflags."""

    UNKNOWN_OP = 0x1
    READ_LEN = 0x2
    KEEP_BUF = 0x4


class TmrType(enum.IntEnum):
    """enum tcmu_tmr_type."""

    UNKNOWN = 0
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LUN_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    LUN_RESET_PRO = 128


def cdb_length(cdb0: int, cdb7: int = 0) -> int:
    """CDB length as the kernel's scsi_command_size() computes it (it sized the entry with it).

    Groups 0..7 give 6, 10, 10, 12, 16, 12, 10, 10; 0x7f is variable length: 8 + additional length.
    """
    if cdb0 == 0x7F:
        return 8 + cdb7
    return (6, 10, 10, 12, 16, 12, 10, 10)[(cdb0 >> 5) & 7]


@dataclass(frozen=True)
class Iovec:
    """One data segment: offset from the start of the map and length in bytes."""

    offset: int
    length: int


@dataclass(frozen=True, eq=False)
class RingCommand:
    """A TCMU_OP_CMD entry, copied out of the ring at fetch.

    Identity, not value, distinguishes commands: the kernel reuses cmd_ids, so a late completion
    for an earlier command with the same id must not be mistaken for the current one.
    iovecs cover Data-Out for BIDI commands and the whole buffer otherwise; bidi_iovecs Data-In.
    """

    cmd_id: int
    cdb: bytes
    iovecs: tuple[Iovec, ...]
    bidi_iovecs: tuple[Iovec, ...] = ()
    ring_offset: int = field(default=0, compare=False)

    @property
    def data_len(self) -> int:
        return sum(v.length for v in self.iovecs)

    @property
    def bidi_len(self) -> int:
        return sum(v.length for v in self.bidi_iovecs)


@dataclass(frozen=True)
class TmrNotice:
    """A TCMU_OP_TMR entry: the kernel aborted these commands (tmr_notification=1).

    tmr_type is kept as the raw number (see TmrType) so a type added by a later kernel is not an
    error; the commands are aborted whatever the type.
    """

    tmr_type: int
    cmd_ids: tuple[int, ...]


@dataclass(frozen=True)
class Mailbox:
    version: int
    flags: MailboxFlag
    cmdr_off: int
    cmdr_size: int
    cmd_head: int
    cmd_tail: int

    @classmethod
    def parse(cls, buf: memoryview | bytes | bytearray) -> Mailbox:
        """Read the mailbox; raises RingError if the buffer is too small."""
        if len(buf) < MAILBOX_SIZE:
            raise RingError(f"map of {len(buf)} bytes is smaller than the {MAILBOX_SIZE}-byte mailbox")
        version, flags, cmdr_off, cmdr_size = _MAILBOX_HEAD.unpack_from(buf, 0)
        (head,) = _U32.unpack_from(buf, MB_CMD_HEAD)
        (tail,) = _U32.unpack_from(buf, MB_CMD_TAIL)
        return cls(version, MailboxFlag(flags), cmdr_off, cmdr_size, head, tail)


class Ring:
    """Consumer side of one TCMU command ring.

    Not thread-safe by design: exactly one owner (a thread or an event loop) may call it.
    Only bytes of the mailbox, of entries between cmd_tail and cmd_head, and inside the iovecs
    of commands currently outstanding are ever read or written (touching any other data page
    of a real TCMU map raises SIGBUS).
    """

    def __init__(self, buf: memoryview | bytearray) -> None:
        mv = memoryview(buf)
        if mv.readonly or mv.ndim != 1 or mv.itemsize != 1:
            raise RingError("the ring needs a writable flat byte buffer")
        mb = Mailbox.parse(mv)
        if mb.version != MAILBOX_VERSION:
            raise RingError(f"TCMU mailbox version {mb.version}, expected {MAILBOX_VERSION}")
        if not mb.flags & MailboxFlag.OOOC:
            raise RingError("kernel does not offer out-of-order completion (TCMU_MAILBOX_FLAG_CAP_OOOC)")
        if mb.cmdr_off != MAILBOX_SIZE:
            raise RingError(f"cmdr_off {mb.cmdr_off}, expected {MAILBOX_SIZE}")
        if mb.cmdr_size < CMD_ENTRY_SIZE * 2 or mb.cmdr_size % ENTRY_ALIGN:
            raise RingError(f"implausible cmdr_size {mb.cmdr_size}")
        if mb.cmdr_off + mb.cmdr_size > len(mv):
            raise RingError(f"ring ends at {mb.cmdr_off + mb.cmdr_size}, beyond the {len(mv)}-byte map")
        for name, val in (("cmd_head", mb.cmd_head), ("cmd_tail", mb.cmd_tail)):
            if val >= mb.cmdr_size or val % ENTRY_ALIGN:
                raise RingError(f"{name} {val} is not an entry boundary of a {mb.cmdr_size}-byte ring")
        self._mv = mv
        self.mailbox = mb
        self.size = mb.cmdr_size
        self.data_off = mb.cmdr_off + mb.cmdr_size
        self._next = mb.cmd_tail  # private fetch pointer (tcmu-runner's dev->cmd_tail)
        self._tail = mb.cmd_tail  # our copy of mb->cmd_tail; only we write it
        self._live: dict[int, RingCommand] = {}
        self._notify = False
        self.pads = 0  # PAD entries seen: how often the kernel wrapped the ring

    # -- state ------------------------------------------------------------------------------------
    @property
    def head(self) -> int:
        (head,) = _U32.unpack_from(self._mv, MB_CMD_HEAD)
        return head

    @property
    def tail(self) -> int:
        return self._tail

    @property
    def outstanding(self) -> int:
        """Commands fetched and not yet completed."""
        return len(self._live)

    def is_outstanding(self, cmd: RingCommand) -> bool:
        return self._live.get(cmd.cmd_id) is cmd

    @property
    def drained(self) -> bool:
        """Nothing queued, nothing outstanding and the tail caught up with the head."""
        return not self._live and self._tail == self._next == self.head

    def take_notify(self) -> bool:
        """True once after the tail moved: the owner must write(4) so the kernel reclaims."""
        notify, self._notify = self._notify, False
        return notify

    def release(self) -> None:
        """Drop the buffer view (an mmap cannot be closed while views exist)."""
        self._mv.release()

    # -- fetch ------------------------------------------------------------------------------------
    def fetch(self) -> list[RingCommand | TmrNotice]:
        """All new entries up to cmd_head, PADs skipped.

        A malformed entry raises RingError if it is the first one; otherwise the good entries
        before it are returned and the next call raises. The fetch pointer never passes a bad entry.
        """
        out: list[RingCommand | TmrNotice] = []
        while True:
            try:
                item = self.next_entry()
            except RingError:
                if out:
                    return out
                raise
            if item is None:
                return out
            out.append(item)

    def next_entry(self) -> RingCommand | TmrNotice | None:
        """The next CMD or TMR entry (copied out), or None when the ring is empty."""
        head = self.head
        if head >= self.size or head % ENTRY_ALIGN:
            raise RingError(f"cmd_head {head} is not an entry boundary")
        while self._next != head:
            pos = self._next
            off = self.mailbox.cmdr_off + pos
            (len_op,) = _U32.unpack_from(self._mv, off)
            op, length = len_op & OP_MASK, len_op & ~OP_MASK
            if length == 0 or pos + length > self.size:
                raise RingError(f"entry at {pos} has length {length}; entries never wrap")
            if length > (head - pos) % self.size:
                raise RingError(f"entry at {pos} (length {length}) runs past cmd_head {head}")
            if op == Op.PAD:
                self.pads += 1
                self._next = (pos + length) % self.size
                self._skip_fetched_non_cmd()
                continue
            if op == Op.CMD:
                cmd = self._parse_cmd(pos, off, length)
                if cmd.cmd_id in self._live:
                    raise RingError(f"cmd_id {cmd.cmd_id} queued while still outstanding")
                self._live[cmd.cmd_id] = cmd
                self._next = (pos + length) % self.size
                return cmd
            if op == Op.TMR:
                notice = self._parse_tmr(pos, off, length)
                self._next = (pos + length) % self.size
                self._skip_fetched_non_cmd()
                return notice
            raise RingError(f"entry at {pos} has opcode {op}; the kernel writes only PAD, CMD and TMR")
        return None

    def _parse_cmd(self, pos: int, off: int, length: int) -> RingCommand:
        mv = self._mv
        if length < CMD_ENTRY_SIZE + ENTRY_ALIGN:
            raise RingError(f"CMD entry at {pos} is {length} bytes, too short for a CDB")
        (cmd_id,) = _U16.unpack_from(mv, off + ENT_CMD_ID)
        (iov_cnt,) = _U32.unpack_from(mv, off + REQ_IOV_CNT)
        (bidi_cnt,) = _U32.unpack_from(mv, off + REQ_IOV_BIDI_CNT)
        (dif_cnt,) = _U32.unpack_from(mv, off + REQ_IOV_DIF_CNT)
        (cdb_off,) = _U64.unpack_from(mv, off + REQ_CDB_OFF)
        n_iov = iov_cnt + bidi_cnt + dif_cnt
        end = off + length
        # The kernel places the CDB right after max(iov[], 112 bytes) inside the same entry.
        if not off + max(REQ_IOV + IOVEC_SIZE * n_iov, CMD_ENTRY_SIZE) <= cdb_off < end:
            raise RingError(f"CMD {cmd_id}: cdb_off {cdb_off} outside its entry at {pos} (+{length})")
        cdb0 = mv[cdb_off]
        cdb7 = mv[cdb_off + 7] if cdb_off + 7 < end else 0
        n = cdb_length(cdb0, cdb7)
        if cdb_off + n > end:
            raise RingError(f"CMD {cmd_id}: {n}-byte CDB (opcode {cdb0:#04x}) overruns its entry")
        limit = len(mv)
        iovs: list[Iovec] = []
        for i in range(iov_cnt + bidi_cnt):
            base, ln = _IOVEC.unpack_from(mv, off + REQ_IOV + IOVEC_SIZE * i)
            if base < self.data_off or base + ln > limit:
                raise RingError(f"CMD {cmd_id}: iovec {i} [{base:#x}+{ln:#x}] outside the data area")
            iovs.append(Iovec(base, ln))
        return RingCommand(cmd_id, bytes(mv[cdb_off : cdb_off + n]), tuple(iovs[:iov_cnt]),
                           tuple(iovs[iov_cnt:]), pos)

    def _parse_tmr(self, pos: int, off: int, length: int) -> TmrNotice:
        if length < TMR_CMD_IDS:
            raise RingError(f"TMR entry at {pos} is {length} bytes, shorter than its header")
        tmr_type = self._mv[off + TMR_TYPE]
        (cnt,) = _U32.unpack_from(self._mv, off + TMR_CMD_CNT)
        if TMR_CMD_IDS + 2 * cnt > length:
            raise RingError(f"TMR entry at {pos} lists {cnt} ids but is only {length} bytes")
        ids = struct.unpack_from(f"<{cnt}H", self._mv, off + TMR_CMD_IDS)
        return TmrNotice(tmr_type, tuple(ids))

    # -- data -------------------------------------------------------------------------------------
    def _own(self, cmd: RingCommand) -> None:
        if self._live.get(cmd.cmd_id) is not cmd:
            raise RingError(f"cmd_id {cmd.cmd_id} is not outstanding; its data pages may be reused")

    def read_data(self, cmd: RingCommand, bidi: bool = False) -> bytes:
        """Copy the bytes in the command's iovecs (Data-Out)."""
        self._own(cmd)
        return b"".join(bytes(self._mv[v.offset : v.offset + v.length])
                        for v in (cmd.bidi_iovecs if bidi else cmd.iovecs))

    def write_data(self, cmd: RingCommand, data: bytes, bidi: bool = False) -> None:
        """Scatter data into the command's iovecs and zero the rest: data pages are reused
        between commands without clearing, so a short answer must not leak older bytes."""
        self._own(cmd)
        pos = 0
        for v in cmd.bidi_iovecs if bidi else cmd.iovecs:
            chunk = data[pos : pos + v.length]
            self._mv[v.offset : v.offset + len(chunk)] = chunk
            if len(chunk) < v.length:
                self._mv[v.offset + len(chunk) : v.offset + v.length] = bytes(v.length - len(chunk))
            pos += len(chunk)

    # -- complete ---------------------------------------------------------------------------------
    def complete(self, cmd_id: int, status: int, sense: bytes = b"", *, read_len: int | None = None) -> None:
        """Complete an outstanding command (tcmulib_command_complete, out of order).

        read_len: bytes of Data-In that are command data; with it the entry carries
        TCMU_UFLAG_READ_LEN and the kernel reports the rest of the buffer as residual.

        The response goes into the slot at cmd_tail, which may belong to another (already
        copied-out) command. Raises RingError for an id that is not outstanding and ValueError
        for a status or sense the entry cannot hold; in both cases nothing is written.
        """
        if not 0 <= status <= 0xFF:
            raise ValueError(f"SCSI status {status} does not fit a byte")
        if len(sense) > SENSE_BUFFER_SIZE:
            raise ValueError(f"sense of {len(sense)} bytes exceeds the {SENSE_BUFFER_SIZE}-byte buffer")
        if read_len is not None and not 0 <= read_len <= 0xFFFFFFFF:
            raise ValueError(f"read_len {read_len} does not fit 32 bits")
        if cmd_id not in self._live:
            raise RingError(f"cmd_id {cmd_id} is not outstanding")
        pos = self._tail
        while True:
            if pos == self._next:
                raise RingError("no fetched CMD slot at cmd_tail")  # invariant: cannot happen
            off = self.mailbox.cmdr_off + pos
            (len_op,) = _U32.unpack_from(self._mv, off)
            if len_op & OP_MASK == Op.CMD:
                break
            pos = (pos + (len_op & ~OP_MASK)) % self.size
        del self._live[cmd_id]
        mv = self._mv
        _U16.pack_into(mv, off + ENT_CMD_ID, cmd_id)  # "steal" the slot for this command
        mv[off + ENT_UFLAGS] = 0 if read_len is None else UFlag.READ_LEN
        _RSP.pack_into(mv, off + RSP_SCSI_STATUS, status, 0, 0, read_len or 0)
        mv[off + RSP_SENSE : off + RSP_SENSE + SENSE_BUFFER_SIZE] = sense.ljust(SENSE_BUFFER_SIZE, b"\0")
        self._set_tail((pos + (len_op & ~OP_MASK)) % self.size)
        self._skip_fetched_non_cmd()

    def _skip_fetched_non_cmd(self) -> None:
        """Move the tail over PAD/TMR entries already fetched, so that an idle ring reads
        head == tail (the drain condition) and the kernel can reclaim their space."""
        pos = self._tail
        while pos != self._next:
            (len_op,) = _U32.unpack_from(self._mv, self.mailbox.cmdr_off + pos)
            if len_op & OP_MASK == Op.CMD:
                break
            pos = (pos + (len_op & ~OP_MASK)) % self.size
        if pos != self._tail:
            self._set_tail(pos)

    def _set_tail(self, pos: int) -> None:
        self._tail = pos
        _U32.pack_into(self._mv, MB_CMD_TAIL, pos)  # aligned 32-bit store
        self._notify = True
