"""The agent's I/O edge on one control disk: parked READs and message WRITEs with O_DIRECT.

The channel logic (cursor in the LBA, sequence numbers, handshake, MACs) lives in the sans-IO
``ChannelClient``; this module only moves its requests to the disk and the results back:

* K reader threads (default 4; the host keeps every READ parked until it has a message or the
  heartbeat is due), each looping ``client.next_read()`` -> ``os.preadv`` into a page-aligned buffer
  -> ``client.read_done()`` -> the upstream messages go to the application in delivery order
  (``on_message`` under the client lock, or the ``inbox`` queue);
* one writer thread: ``client.next_write()`` -> WRITE -> ``client.write_done()``. One writer keeps
  downstream WRITEs in sequence order on the wire. The WRITE goes through SG_IO when the device
  takes it (``guest_agent.sgio``), so a refused message comes back with the host's sense data (why it
  was refused); otherwise, or with ``sg_io=False``, through ``os.pwritev`` (the block layer reduces a
  refusal to EIO).

O_DIRECT (on by default) keeps the guest page cache out: a cached READ would return an old message
instead of reaching the host, and a cached WRITE might never leave the guest. Buffers come from
anonymous ``mmap`` (page aligned, which satisfies any logical block size up to 4096); Python's
``os.read`` would allocate an unaligned buffer and fail with EINVAL.

An OSError on a READ (EIO: a host timer fired, the path is down, edifd restarting) is reported with
``client.read_failed``, then the READ is re-armed after a bounded exponential backoff. So is a READ
that completed with data the client rejected (``counters["rejected"]`` went up in ``read_done``: not
a channel message, a wrong MAC, not upstream): a disk that answers nonsense at once (not a control
LUN, the wrong key) would otherwise be READ again at once, tens of thousands of times a second
(edge counter ``nonsense_reads``). Heartbeats and messages re-arm at once, as before. The client
object is not assumed thread-safe: every call into it holds one lock.

Restart safety: ``persist`` is called, under that lock, with the client's snapshot before every
WRITE is issued, after every WRITE that completed, and after every READ that delivered something
(then *after* ``on_message`` has seen the messages). An application that keeps its own state in
the same file (``edif-agent ping`` does) thus always saves a consistent pair: a message is either
consumed in the saved client state and recorded by the application, or neither, and a restart
redelivers it. With the ``inbox`` instead, a message is persisted as consumed before the
application takes it (at most once across a crash).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .backoff import Backoff
from .sgio import sg_write

log = logging.getLogger("edif_agent.disk")

# errnos that mean "this fd does not do SG_IO" (regular file, no SCSI device, not permitted)
_NO_SG_IO = frozenset({errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})
_WRITER_POLL_S = 0.05  # the writer also polls: the client queues ACKs on its own clock (ACK_DELAY)


class ReadReq(Protocol):
    lba: int
    nblocks: int
    token: int


class WriteReq(Protocol):
    lba: int
    payload: bytes
    token: int


class ChannelCore(Protocol):
    """What the edge needs from guest_agent.client.ChannelClient."""

    def next_read(self) -> ReadReq: ...
    def read_done(self, token: int, data: bytes) -> list[Any]: ...  # counts counters["rejected"], if any
    def read_failed(self, token: int) -> None: ...
    def next_write(self) -> WriteReq | None: ...
    def write_done(self, token: int, ok: bool, sense: bytes = b"") -> None: ...
    def snapshot(self) -> bytes: ...


class AlignedBuffer:
    """A page-aligned buffer that grows (stays aligned) when a request needs more room."""

    def __init__(self, size: int = mmap.PAGESIZE) -> None:
        self._mm = mmap.mmap(-1, max(size, mmap.PAGESIZE))

    def view(self, n: int) -> memoryview:
        if n > len(self._mm):
            self._mm.close()
            self._mm = mmap.mmap(-1, -(-n // mmap.PAGESIZE) * mmap.PAGESIZE)
        return memoryview(self._mm)[:n]

    def close(self) -> None:
        self._mm.close()


class ControlDiskEndpoint:
    """Drives one ChannelClient over one control disk (a block device, or a regular file in tests)."""

    def __init__(
        self,
        client: ChannelCore,
        path: str,
        *,
        block_size: int = 512,
        parked: int = 4,
        direct: bool = True,
        backoff: Callable[[], Backoff] = Backoff,
        persist: Callable[[bytes], None] | None = None,
        on_message: Callable[[Any], None] | None = None,
        sleep: Callable[[threading.Event, float], bool] | None = None,
        sg_io: bool | None = None,
    ) -> None:
        if parked < 1:
            raise ValueError("at least one parked READ is needed to receive anything")
        if block_size <= 0 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two")
        self.client = client
        self.path = path
        self.block_size = block_size
        self.parked = parked
        self.direct = direct
        self._backoff = backoff
        self._persist = persist
        self._on_message = on_message
        self.sg_io = sg_io  # None: try SG_IO, fall back to pwritev where the device has none
        self._use_sg = sg_io is not False
        self._sleep = sleep or (lambda ev, s: ev.wait(s))  # True = stop requested while waiting
        self.inbox: queue.Queue[Any] = queue.Queue()  # upstream messages, in delivery order
        self.lock = threading.RLock()  # guards the client and the counters
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fd: int | None = None
        self._last_snapshot: bytes | None = None
        self.counters: dict[str, int] = {
            "reads_ok": 0, "read_errors": 0, "short_reads": 0, "writes_ok": 0, "write_errors": 0,
            "messages_in": 0, "backoff_waits": 0, "persist_errors": 0, "write_sense": 0,
            "sg_io_unavailable": 0, "nonsense_reads": 0,
        }
        self.last_error: str | None = None
        self.fatal: str | None = None  # a loop died on an unexpected error; the endpoint then stops

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_DIRECT if self.direct else 0)
        try:
            self._fd = os.open(self.path, flags)
        except OSError as e:
            raise OSError(e.errno, f"cannot open control disk {self.path}: {e.strerror}") from None

    def start(self) -> None:
        if self._fd is None:
            self.open()
        self._threads = [
            threading.Thread(target=self._guard, args=(self._reader, i), name=f"edif-read-{i}", daemon=True)
            for i in range(self.parked)
        ]
        self._threads.append(
            threading.Thread(target=self._guard, args=(self._writer,), name="edif-write", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the loops. A reader blocked on a parked READ returns at the host's next heartbeat, so
        ``timeout`` should exceed the park time; True when every thread ended (the fd is then closed)."""
        self._stop.set()
        self._wake.set()
        deadline = timeout
        for t in self._threads:
            t.join(max(0.0, deadline))
        done = not any(t.is_alive() for t in self._threads)
        if done and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return done

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> ControlDiskEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for the application -----------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(client, *args) under the client lock and wake the writer (e.g. client.request)."""
        with self.lock:
            result = fn(self.client, *args)
        self._wake.set()
        return result

    def save(self) -> None:
        """Persist now (e.g. right after queuing a request, so a restart re-sends it)."""
        with self.lock:
            self._persist_locked(force=True)

    def kick(self) -> None:
        """Tell the writer the client may have something to send."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {"path": self.path, "parked": self.parked, "direct": self.direct,
                                   "edge": dict(self.counters), "last_error": self.last_error}
            cc = getattr(self.client, "counters", None)
            if isinstance(cc, dict):
                out["channel"] = dict(cc)
            out["established"] = bool(getattr(self.client, "established", False))
            for name in ("cursor", "acked", "host_sequence"):  # sequence figures, no content
                v = getattr(self.client, name, None)
                if isinstance(v, int):
                    out[name] = v
        return out

    # -- the loops ---------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _rejected(self) -> int:
        """The client's count of READ data it could not use (ChannelClient: ``counters["rejected"]``;
        a client without it never reports nonsense). Under the lock."""
        cc = getattr(self.client, "counters", None)
        return int(cc.get("rejected", 0)) if isinstance(cc, dict) else 0

    def _persist_locked(self, force: bool = False) -> None:
        if self._persist is None:
            return
        snap = self.client.snapshot()
        if snap == self._last_snapshot and not force:
            return
        try:
            self._persist(snap)
            self._last_snapshot = snap
        except OSError as e:  # keep the channel going; a restart then resumes from an older state
            self._count("persist_errors")
            self.last_error = f"saving agent state: {e.strerror or e}"

    def _guard(self, loop: Callable[..., None], *args: Any) -> None:
        try:
            loop(*args)
        except Exception as e:  # a bug or a client refusal: stop everything rather than limp on
            with self.lock:
                self.fatal = f"{threading.current_thread().name}: {type(e).__name__}: {e}"
            log.error("%s; stopping the endpoint", self.fatal)
            self._stop.set()
            self._wake.set()

    def _reader(self, idx: int) -> None:
        bo = self._backoff()
        buf = AlignedBuffer()
        try:
            while not self._stop.is_set():
                with self.lock:
                    req = self.client.next_read()
                n = req.nblocks * self.block_size
                view = buf.view(n)
                data: bytes | None = None
                try:
                    got = os.preadv(self._fd, [view], req.lba * self.block_size)  # type: ignore[arg-type]
                    if got == n:
                        data = bytes(view)
                    else:
                        why = f"READ at LBA {req.lba}: {got} of {n} bytes"
                        with self.lock:
                            self._count("short_reads")
                except OSError as e:
                    why = f"READ at LBA {req.lba}: {e.strerror or e}"
                finally:
                    view.release()
                if data is None:
                    self._failed_read(req.token, why)
                    if self._sleep(self._stop, bo.next_delay()):
                        break
                    continue
                with self.lock:
                    self._count("reads_ok")
                    rejected = self._rejected()
                    msgs = self.client.read_done(req.token, data)
                    nonsense = self._rejected() > rejected
                    if nonsense:
                        self._count("nonsense_reads")
                        self._count("backoff_waits")
                        self.last_error = f"READ at LBA {req.lba}: not a channel message for this agent"
                    for m in msgs:
                        self._count("messages_in")
                        if self._on_message is not None:
                            self._on_message(m)
                    # After the application recorded them (module docstring); forced, since its record
                    # changed even when the client's snapshot did not.
                    self._persist_locked(force=bool(msgs))
                    if self._on_message is None:
                        for m in msgs:
                            self.inbox.put(m)
                self._wake.set()  # a delivery may have queued a write (handshake step, ack)
                if not nonsense:
                    bo.reset()
                    continue
                # The token is spent (read_done took it): re-arm like a failed READ, after the backoff.
                log.warning("READ at LBA %d: not a channel message for this agent; re-arming after "
                            "backoff", req.lba)
                if self._sleep(self._stop, bo.next_delay()):
                    break
        finally:
            buf.close()

    def _failed_read(self, token: int, why: str) -> None:
        with self.lock:
            self._count("read_errors")
            self._count("backoff_waits")
            self.last_error = why
            self.client.read_failed(token)
        log.warning("%s; re-arming after backoff", why)

    def _write(self, view: memoryview, lba: int) -> tuple[bool, str, bytes]:
        """One WRITE: (ok, what went wrong, sense). SG_IO when the device takes it, else pwritev."""
        n = len(view)
        if self._use_sg:
            try:
                r = sg_write(self._fd, lba, view, self.block_size)  # type: ignore[arg-type]
            except OSError as e:
                if self.sg_io is not None or e.errno not in _NO_SG_IO:
                    return False, f"WRITE at LBA {lba} (SG_IO): {e.strerror or e}", b""
                self._use_sg = False  # a regular file or a device without SG_IO: the block layer path
                with self.lock:
                    self._count("sg_io_unavailable")
            else:
                why = (f"WRITE at LBA {lba}: SCSI status 0x{r.status:02x} host 0x{r.host_status:x} "
                       f"driver 0x{r.driver_status:x}" + (f" sense {r.sense[:18].hex()}" if r.sense else ""))
                return r.ok, why, r.sense
        try:
            got = os.pwritev(self._fd, [view], lba * self.block_size)  # type: ignore[arg-type]
        except OSError as e:
            return False, f"WRITE at LBA {lba}: {e.strerror or e}", b""
        return got == n, f"WRITE at LBA {lba}: {got} of {n} bytes", b""

    def _writer(self) -> None:
        bo = self._backoff()
        buf = AlignedBuffer()
        try:
            while not self._stop.is_set():
                with self.lock:
                    w = self.client.next_write()
                if w is None:
                    self._wake.wait(_WRITER_POLL_S)
                    self._wake.clear()
                    continue
                with self.lock:
                    # Save before the WRITE leaves: a crash while it is in flight must resume from a
                    # state that knows a WRITE may have reached the host (the client marks it in doubt).
                    self._persist_locked()
                ok, why, sense = self._write_padded(buf, w)
                with self.lock:
                    self.client.write_done(w.token, ok, sense)
                    if ok:
                        self._count("writes_ok")
                        self._persist_locked()
                    else:
                        self._count("write_errors")
                        self._count("backoff_waits")
                        if sense:
                            self._count("write_sense")
                        self.last_error = why
                if ok:
                    bo.reset()
                else:
                    log.warning("%s; retrying after backoff", why)
                    if self._sleep(self._stop, bo.next_delay()):
                        break
            self._final_ack(buf)
        finally:
            buf.close()

    def _final_ack(self, buf: AlignedBuffer) -> None:
        """A clean stop acknowledges what was consumed (one try: a lost one costs a redelivery)."""
        with self.lock:
            final = getattr(self.client, "final_ack", None)
            w = final() if final is not None else None
        if w is None:
            return
        ok, _, sense = self._write_padded(buf, w)
        with self.lock:
            self.client.write_done(w.token, ok, sense)

    def _write_padded(self, buf: AlignedBuffer, w: WriteReq) -> tuple[bool, str, bytes]:
        """The WRITE of `w`'s payload, zero-padded to whole blocks in the aligned buffer (O_DIRECT)."""
        payload = bytes(w.payload)
        n = -(-len(payload) // self.block_size) * self.block_size
        view = buf.view(n)
        try:
            view[: len(payload)] = payload
            view[len(payload):] = bytes(n - len(payload))
            return self._write(view, w.lba)
        finally:
            view.release()
