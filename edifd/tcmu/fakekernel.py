"""A model of the kernel side of a TCMU ring, for tests and demos without configfs.

It produces entries exactly as drivers/target/target_core_user.c does (queue_cmd_ring,
ring_insert_padding, queue_tmr_ring): memset entry, header, iovecs over data blocks allocated
lowest-first and merged when adjacent, CDB after max(iov[], 112 bytes), PAD to the end of the ring
when an entry does not fit, one byte always kept free, head stored last. Completions are consumed
as tcmu_handle_completions does: walk from last_cleaned to cmd_tail, skip PAD/TMR, look each CMD
slot's cmd_id up (an unknown id breaks the ring), gather Data-In, free the blocks. Freed blocks
are filled with a marker byte, as reused pages are never zeroed, so stale-data leaks and late
writes into freed pages are visible.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass, field

from edifd.tcmu import ring as r

STALE = 0xA5  # content of a freed data block


class RingFull(Exception):
    """The model has no ring or data space for the entry (the kernel would queue it)."""


@dataclass(frozen=True)
class Completion:
    cmd_id: int
    status: int
    sense: bytes
    data: bytes  # Data-In as the initiator receives it
    aborted: bool = False


@dataclass
class _KernelCmd:
    cmd_id: int
    blocks: list[int]
    out_iovs: list[tuple[int, int]]
    in_iovs: list[tuple[int, int]]
    aborted: bool = False


@dataclass
class FakeKernel:
    cmdr_size: int = 4096
    data_blocks: int = 64
    block_size: int = 512
    flags: int = int(r.MailboxFlag.OOOC | r.MailboxFlag.READ_LEN | r.MailboxFlag.TMR | r.MailboxFlag.KEEP_BUF)
    version: int = r.MAILBOX_VERSION
    buf: bytearray = field(init=False, repr=False)
    completions: list[Completion] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)  # ids failed with BUSY by reset_ring
    broken: bool = False
    blocked: bool = False

    def __post_init__(self) -> None:
        self.data_off = r.MAILBOX_SIZE + self.cmdr_size
        self.buf = bytearray(self.data_off + self.data_blocks * self.block_size)
        self.buf[self.data_off:] = bytes([STALE]) * (self.data_blocks * self.block_size)
        struct.pack_into("<HHII", self.buf, 0, self.version, self.flags, r.MAILBOX_SIZE, self.cmdr_size)
        self.head = 0
        self.last_cleaned = 0
        self.commands: dict[int, _KernelCmd] = {}
        self.free = set(range(self.data_blocks))
        self._next_id = 1
        self.lock = threading.RLock()
        self.events = 0

    # -- producer ---------------------------------------------------------------------------------
    def _space(self) -> int:
        used = (self.head - self.last_cleaned) % self.cmdr_size
        return self.cmdr_size - used - 1

    def _reserve(self, size: int) -> int:
        """Pad to the end if needed (ring_insert_padding); return the entry's ring offset."""
        to_end = self.cmdr_size - self.head
        needed = size if to_end >= size else size + to_end
        if self._space() < needed:
            raise RingFull("ring")
        if to_end < size:
            off = r.MAILBOX_SIZE + self.head
            self.buf[off:off + to_end] = bytes(to_end)
            struct.pack_into("<IH", self.buf, off, to_end | r.Op.PAD, 0)
            self.head = 0
        return self.head

    def _alloc(self, out_len: int, in_len: int) -> list[int]:
        n = -(-out_len // self.block_size) + -(-in_len // self.block_size)
        if n > len(self.free):
            raise RingFull("data area")
        blocks = sorted(self.free)[:n]
        self.free.difference_update(blocks)
        return blocks

    def _iovs(self, blocks: list[int], nbytes: int) -> list[tuple[int, int]]:
        iovs: list[tuple[int, int]] = []
        for b in blocks:
            take = min(self.block_size, nbytes)
            base = self.data_off + b * self.block_size
            if iovs and iovs[-1][0] + iovs[-1][1] == base:
                iovs[-1] = (iovs[-1][0], iovs[-1][1] + take)
            else:
                iovs.append((base, take))
            nbytes -= take
        return iovs

    def _publish(self, size: int) -> None:
        self.head = (self.head + size) % self.cmdr_size
        struct.pack_into("<I", self.buf, r.MB_CMD_HEAD, self.head)  # smp_store_release: last
        self.events += 1

    def queue_cmd(self, cdb: bytes, data_out: bytes = b"", data_in_len: int = 0) -> int:
        """Queue a command; data_out for WRITE-like, data_in_len for READ-like, both for BIDI.
        Returns the cmd_id."""
        with self.lock:
            if self.blocked:
                raise RingFull("blocked")
            n = r.cdb_length(cdb[0], cdb[7] if len(cdb) > 7 else 0)
            cdb = cdb[:n].ljust(n, b"\0")
            nb_out = -(-len(data_out) // self.block_size)
            blocks = self._alloc(len(data_out), data_in_len)
            out_iovs = self._iovs(blocks[:nb_out], len(data_out))
            in_iovs = self._iovs(blocks[nb_out:], data_in_len)
            n_iov = len(out_iovs) + len(in_iovs)
            base = max(r.REQ_IOV + r.IOVEC_SIZE * n_iov, r.CMD_ENTRY_SIZE)
            size = base + -(-n // r.ENTRY_ALIGN) * r.ENTRY_ALIGN
            try:
                pos = self._reserve(size)
            except RingFull:
                self.free.update(blocks)
                raise
            cmd_id = self._next_id
            while cmd_id in self.commands:
                cmd_id = cmd_id % 0xFFFF + 1
            self._next_id = cmd_id % 0xFFFF + 1
            off = r.MAILBOX_SIZE + pos
            self.buf[off:off + size] = bytes(size)
            struct.pack_into("<IH", self.buf, off, size | r.Op.CMD, cmd_id)
            # BIDI: iov_cnt covers Data-Out, iov_bidi_cnt Data-In; otherwise iov_cnt covers either.
            if out_iovs and in_iovs:
                counts = (len(out_iovs), len(in_iovs))
            else:
                counts = (n_iov, 0)
            struct.pack_into("<III", self.buf, off + r.REQ_IOV_CNT, *counts, 0)
            struct.pack_into("<Q", self.buf, off + r.REQ_CDB_OFF, off + base)
            for i, (b, ln) in enumerate(out_iovs + in_iovs):
                struct.pack_into("<QQ", self.buf, off + r.REQ_IOV + 16 * i, b, ln)
            self.buf[off + base:off + base + n] = cdb
            pos_d = 0
            for b, ln in out_iovs:
                self.buf[b:b + ln] = data_out[pos_d:pos_d + ln]
                pos_d += ln
            self.commands[cmd_id] = _KernelCmd(cmd_id, blocks, out_iovs, in_iovs)
            self._publish(size)
            return cmd_id

    def queue_tmr(self, cmd_ids: list[int], tmr_type: int = r.TmrType.ABORT_TASK) -> None:
        """Abort commands the way tcmu_tmr_notify does with tmr_notification=1."""
        with self.lock:
            ids = [i for i in cmd_ids if i in self.commands]
            for i in ids:
                self.commands[i].aborted = True
            size = -(-(r.TMR_CMD_IDS + 2 * len(ids)) // r.ENTRY_ALIGN) * r.ENTRY_ALIGN
            pos = self._reserve(size)
            off = r.MAILBOX_SIZE + pos
            self.buf[off:off + size] = bytes(size)
            struct.pack_into("<IH", self.buf, off, size | r.Op.TMR, 0)
            self.buf[off + r.TMR_TYPE] = tmr_type
            struct.pack_into("<I", self.buf, off + r.TMR_CMD_CNT, len(ids))
            struct.pack_into(f"<{len(ids)}H", self.buf, off + r.TMR_CMD_IDS, *ids)
            self._publish(size)

    # -- consumer of completions ------------------------------------------------------------------
    def handle_completions(self) -> list[Completion]:
        """What the kernel does on our write(4)."""
        with self.lock:
            out: list[Completion] = []
            (tail,) = struct.unpack_from("<I", self.buf, r.MB_CMD_TAIL)
            while not self.broken and self.last_cleaned != tail:
                off = r.MAILBOX_SIZE + self.last_cleaned
                len_op, cmd_id, _k, uflags = struct.unpack_from("<IHBB", self.buf, off)
                if len_op & r.OP_MASK in (r.Op.PAD, r.Op.TMR):
                    self.last_cleaned = (self.last_cleaned + (len_op & ~r.OP_MASK)) % self.cmdr_size
                    continue
                kc = self.commands.pop(cmd_id, None)
                if kc is None:
                    self.broken = True  # "cmd_id %u not found, ring is broken"
                    break
                status = self.buf[off + r.RSP_SCSI_STATUS]
                sense = bytes(self.buf[off + r.RSP_SENSE:off + r.RSP_SENSE + r.SENSE_BUFFER_SIZE])
                data = b"".join(bytes(self.buf[b:b + ln]) for b, ln in kc.in_iovs)
                if uflags & r.UFlag.READ_LEN:  # the initiator gets read_len bytes, the rest is residual
                    (read_len,) = struct.unpack_from("<I", self.buf, off + r.RSP_READ_LEN)
                    data = data[:read_len]
                out.append(Completion(cmd_id, status, sense, data, kc.aborted))
                self._release(kc)
                self.last_cleaned = (self.last_cleaned + (len_op & ~r.OP_MASK)) % self.cmdr_size
            self.completions.extend(out)
            return out

    def _release(self, kc: _KernelCmd) -> None:
        for b in kc.blocks:
            start = self.data_off + b * self.block_size
            self.buf[start:start + self.block_size] = bytes([STALE]) * self.block_size
        self.free.update(kc.blocks)

    def free_blocks_untouched(self) -> bool:
        """True if nobody wrote into a data block that is not allocated to a command."""
        return all(self.buf[self.data_off + b * self.block_size:
                            self.data_off + (b + 1) * self.block_size] == bytes([STALE]) * self.block_size
                   for b in self.free)

    # -- configfs actions -------------------------------------------------------------------------
    def reset_ring(self) -> None:
        """action/reset_ring=1: fail in-flight commands with BUSY, zero head and tail."""
        with self.lock:
            for kc in self.commands.values():
                self.busy.append(kc.cmd_id)
                self._release(kc)
            self.commands.clear()
            self.head = self.last_cleaned = 0
            struct.pack_into("<I", self.buf, r.MB_CMD_HEAD, 0)
            struct.pack_into("<I", self.buf, r.MB_CMD_TAIL, 0)
            self.broken = False

    @property
    def in_flight(self) -> int:
        return len(self.commands)


class FakeUio:
    """The UIO file of a FakeKernel: an eventfd stands in for the interrupt count."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.buffer = kernel.buf
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.notifies = 0
        self.closed = False

    def fileno(self) -> int:
        return self._efd

    def signal(self) -> None:
        """uio_event_notify()."""
        os.eventfd_write(self._efd, 1)

    def clear_event(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass

    def notify(self) -> None:
        self.notifies += 1
        self.kernel.handle_completions()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._efd)


class FakeControl:
    """configfs action/ files of a FakeKernel."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.log: list[str] = []

    def block(self) -> None:
        self.log.append("block")
        self.kernel.blocked = True

    def unblock(self) -> None:
        self.log.append("unblock")
        self.kernel.blocked = False

    def reset_ring(self) -> None:
        self.log.append("reset_ring")
        self.kernel.reset_ring()
