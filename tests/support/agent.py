"""A stand-in for guest_agent.client.ChannelClient (same API) with a tiny host behind it, and helpers
for the agent tests: a preadv that "parks" like the host does, EIO injection, a control disk served by
the real host core to an agent subprocess (`RemoteDiskServer`, `agent`), a control LUN's identity for the
stand-in disk file (`control_lun_identity`, `install_identity`), and a fake sysfs (`make_disk`).

The stand-in ignores the bytes on the disk for its logic (it is the host as well as the client), but
records them, so the edge tests can check what was read from where.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from edifd.proto import Message, MessageType, Response, Status
from edifd.scsi import Identity
from edifd.scsi.inquiry import VPD_DEVICE_ID, VPD_UNIT_SERIAL, vpd_page
from guest_agent.client import ReadRequest, WriteRequest
from guest_agent.discovery import DEFAULT_PRODUCT, DEFAULT_VENDOR, ControlDisk

READ_BASE = 1024  # LBAs the stand-in parks READs at: apart, so nothing could merge them
READ_GAP = 16


class FakeClient:
    """ChannelClient's API over an in-process host that answers APP_START and KEEPALIVE."""

    def __init__(self, key: Any = None, *, port_index: int = 0, block_size: int = 512,
                 capacity_blocks: int = 4096, parked_reads: int = 4, clock: Any = None,
                 state: bytes | None = None, accept: bool = True, duplicate_every: int = 0) -> None:
        self.block_size = block_size
        self.port_index = port_index
        self.accept = accept  # False: the "host" never answers the handshake (wrong key)
        self.duplicate_every = duplicate_every  # >0: deliver every n-th response twice (a broken host)
        self.cond = threading.Condition()
        self.next_token = 1
        self.reads_out: dict[int, ReadRequest] = {}
        self.read_data: list[tuple[int, bytes]] = []  # (lba, data) of every completed READ
        self.failed_reads: list[int] = []
        self.writes: deque[WriteRequest] = deque()
        self.writes_out: dict[int, WriteRequest] = {}
        self.written: list[tuple[int, bytes]] = []
        self.write_failures = 0
        self.senses: list[bytes] = []
        self.upstream: deque[Message] = deque()
        self.next_rid = 1
        self.epoch = 0x1234
        self.up_seq = 0
        self.started = False
        self._established = False
        self.answered = 0
        self.counters: dict[str, int] = {"delivered": 0, "requests": 0}
        if state:
            s = json.loads(state)
            self.up_seq, self.next_rid, self._established = s["up_seq"], s["next_rid"], s["established"]

    # -- reads
    def next_read(self) -> ReadRequest:
        t = self.next_token
        self.next_token += 1
        r = ReadRequest(READ_BASE + READ_GAP * (t % 32), 8, t)
        self.reads_out[t] = r
        return r

    def read_done(self, token: int, data: bytes) -> list[Message]:
        r = self.reads_out.pop(token)
        self.read_data.append((r.lba, data))
        with self.cond:
            out = list(self.upstream)
            self.upstream.clear()
        self.counters["delivered"] += len(out)
        return out

    def read_failed(self, token: int) -> None:
        self.reads_out.pop(token)
        self.failed_reads.append(token)

    # -- writes
    def start(self) -> None:
        self.started = True
        self._queue_write(b"APP_START")

    @property
    def established(self) -> bool:
        return self._established

    def request(self, body: Any) -> int:
        rid = self.next_rid
        self.next_rid += 1
        self.counters["requests"] += 1
        self._queue_write(b"REQ" + rid.to_bytes(8, "big") + MessageType(body.TYPE).name.encode())
        return rid

    def _queue_write(self, payload: bytes) -> None:
        t = self.next_token
        self.next_token += 1
        self.writes.append(WriteRequest(64 + t % 64, payload, t))

    def next_write(self) -> WriteRequest | None:
        if not self.writes:
            return None
        w = self.writes.popleft()
        self.writes_out[w.token] = w
        return w

    def write_done(self, token: int, ok: bool, sense: bytes = b"") -> None:
        w = self.writes_out.pop(token)
        if sense:
            self.senses.append(sense)
        if not ok:
            self.write_failures += 1
            self.writes.appendleft(w)  # the real client retries the same WRITE (same LBA = same sequence)
            return
        self.written.append((w.lba, w.payload))
        self._host(w.payload)

    def _host(self, payload: bytes) -> None:
        with self.cond:
            if payload == b"APP_START":
                self._established = self.accept
            elif payload.startswith(b"REQ") and self._established:
                rid = int.from_bytes(payload[3:11], "big")
                self.up_seq += 1
                m = Message(Response(MessageType.KEEPALIVE, Status.OK), self.port_index, self.epoch, rid,
                            self.up_seq)
                self.upstream.append(m)
                self.answered += 1
                if self.duplicate_every and self.answered % self.duplicate_every == 0:
                    self.upstream.append(m)
            self.cond.notify_all()

    def wait_upstream(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.upstream), timeout)

    def snapshot(self) -> bytes:
        return json.dumps({"up_seq": self.up_seq, "next_rid": self.next_rid,
                           "established": self._established}).encode()


def parking_preadv(client_ref: list[FakeClient], park_s: float = 0.05, eio_first: int = 0) -> Any:
    """An os.preadv that blocks like a parked READ (until the stand-in host has something, or park_s),
    and fails the first ``eio_first`` calls with EIO."""
    real = os.preadv
    calls = {"n": 0}
    lock = threading.Lock()

    def preadv(fd: int, bufs: Any, offset: int) -> int:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n <= eio_first:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        if client_ref:
            client_ref[-1].wait_upstream(park_s)  # the newest client (after a restart)
        return real(fd, bufs, offset)

    preadv.calls = calls  # type: ignore[attr-defined]
    return preadv


# -- a control disk served by the real host core, reachable from an agent subprocess ---------------
#
# The agent runs as a real process (so it can be SIGKILLed), with its preadv/pwritev forwarded over a
# Unix socket to this process, where ScsiDisk(ChannelCore) answers them as the TCMU ring would: a READ
# blocks until the core completes it (parked, message or heartbeat), a refused WRITE is an EIO (the
# block layer gives the agent no sense data). "Killing edifd" swaps in a core restored from the saved
# host state; READs parked on the old one are re-issued on the new one, as the guest does after the
# BUSY that TCMU's ring reset returns.

_HDR = ">cQI"  # op, offset, length
_HDR_SIZE = 13


def _recvn(sock: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def install_remote_disk(sock_path: str) -> None:
    """In the agent subprocess: route the edge's preadv/pwritev to the test's RemoteDiskServer."""
    import socket
    import struct

    local = threading.local()

    def conn() -> Any:
        c = getattr(local, "c", None)
        if c is None:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock_path)
            local.c = c
        return c

    def preadv(fd: int, bufs: Any, offset: int) -> int:
        (buf,) = bufs
        c = conn()
        c.sendall(struct.pack(_HDR, b"R", offset, len(buf)))
        if _recvn(c, 1) != b"\0":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        buf[:] = _recvn(c, len(buf))
        return len(buf)

    def pwritev(fd: int, bufs: Any, offset: int) -> int:
        data = b"".join(bytes(b) for b in bufs)
        c = conn()
        c.sendall(struct.pack(_HDR, b"W", offset, len(data)) + data)
        if _recvn(c, 1) != b"\0":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return len(data)

    os.preadv = preadv  # type: ignore[assignment]
    os.pwritev = pwritev  # type: ignore[assignment]


class RemoteDiskServer:
    """The host side: serves READ/WRITE from agent subprocesses with ScsiDisk(ChannelCore)."""

    def __init__(self, sock_path: str, make_core: Any) -> None:
        import socket

        from edifd.scsi import ScsiDisk

        self._scsi_disk = ScsiDisk
        self._make_core = make_core
        self.core = make_core(None)
        self.disk = ScsiDisk(self.core)
        self.cores = [self.core]
        self.gen = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(sock_path)
        self.srv.listen(64)
        self.srv.settimeout(0.1)
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._tick, daemon=True)]
        for t in self.threads:
            t.start()

    def restart_host(self, restored: Any) -> None:
        """edifd SIGKILLed and started again from its state file."""
        with self.lock:
            self.core = self._make_core(restored)
            self.disk = self._scsi_disk(self.core)
            self.cores.append(self.core)
            self.gen += 1

    def close(self) -> None:
        self.stop.set()
        for c in self.cores:
            c.close()
        self.srv.close()

    def _tick(self) -> None:
        while not self.stop.wait(0.02):
            self.core.tick()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: Any) -> None:
        import struct

        from edifd.channel.loopback import read_cdb, write_cdb
        from edifd.scsi import Pending, Status

        try:
            while not self.stop.is_set():
                op, offset, n = struct.unpack(_HDR, _recvn(c, _HDR_SIZE))
                data = _recvn(c, n) if op == b"W" else b""
                while True:
                    with self.lock:
                        disk, gen = self.disk, self.gen
                    bs = disk.medium.block_size
                    cmd = (read_cdb(offset // bs, n // bs, bs) if op == b"R"
                           else write_cdb(offset // bs, data, bs))
                    res = disk.execute(cmd)
                    if isinstance(res, Pending):
                        done = threading.Event()
                        res.on_done(lambda _r, ev=done: ev.set())
                        while not done.wait(0.02) and self.gen == gen and not self.stop.is_set():
                            pass
                        if not done.is_set():
                            if self.stop.is_set():
                                return
                            continue  # the host restarted under this READ: the guest retries it
                        res = res.result
                    break
                if res.status == Status.GOOD:
                    out = b"\0" + (bytes(res.data).ljust(n, b"\0") if op == b"R" else b"")
                else:
                    out = b"\1"
                c.sendall(out)
        except (ConnectionError, OSError):
            return
        finally:
            c.close()


# -- the stand-in disk's identity ------------------------------------------------------------------
#
# The agent refuses a --device that is not an EDIF control LUN (guest_agent.discovery.check_control_disk),
# and a regular file has no INQUIRY data. The tests' stand-in disk is such a file, so they give it a
# control LUN's identity through the seam guest_agent.channel.describe_device: only regular files change
# (only the ones named, if any are), and the check itself still runs on what the seam returns.

STAND_IN_WWPN = 0x5001438012345678


def control_lun_identity(describe: Any, *paths: str, wwpn: int | None = STAND_IN_WWPN) -> Any:
    """Wrap describe_device so these regular files (any regular file, if none is named) describe as
    INQUIRY EDIF/CTRL with this port in VPD 0x83 (source "stand-in"); everything else as before."""
    wanted = {os.path.realpath(p) for p in paths}

    def fake(path: str, *, sys_root: str) -> ControlDisk:
        d = describe(path, sys_root=sys_root)
        if d.source == "file" and (not wanted or os.path.realpath(path) in wanted):
            return dataclasses.replace(d, vendor=DEFAULT_VENDOR, model=DEFAULT_PRODUCT, wwpn=wwpn,
                                       source="stand-in")
        return d

    return fake


def install_identity(dev_path: str) -> None:
    """In the agent subprocess: the stand-in file at dev_path is an EDIF control LUN (as
    install_remote_disk makes its READs and WRITEs reach the test's host)."""
    from guest_agent import channel

    channel.describe_device = control_lun_identity(channel.describe_device, dev_path)  # type: ignore[assignment]


# -- edif-agent as a process, over the remote disk ---------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def agent(files, *args: str, command: tuple[str, ...] = ("ping", "--json"),
          env: dict[str, str] | None = None) -> subprocess.Popen:
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}]; "
            f"import tests.support.agent as s; s.install_remote_disk({str(files['sock'])!r}); "
            f"s.install_identity({str(files['dev'])!r}); "
            "from guest_agent.cli import main; main(sys.argv[1:], prog_name='edif-agent')")
    argv = [sys.executable, "-c", code, *command, "--device", str(files["dev"]), "--no-direct",
            "--timeout", "20", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


# -- a fake sysfs ------------------------------------------------------------------------------------

WWPN_A = 0x500143801234567A
WWPN_B = 0x500143801234567B


def make_disk(root: Path, name: str, *, vendor: str = "EDIF", model: str = "CTRL", serial: str = "CTL-1",
              wwpn: int | None = WWPN_A, block_size: int = 512, sectors: int = 32768,
              vpd83: bytes | None = None) -> Path:
    """One /sys/block/<name> as the kernel lays it out (INQUIRY strings space-padded)."""
    d = root / "block" / name
    (d / "device").mkdir(parents=True)
    (d / "queue").mkdir()
    (d / "device" / "vendor").write_text(f"{vendor:<8}\n")
    (d / "device" / "model").write_text(f"{model:<16}\n")
    (d / "queue" / "logical_block_size").write_text(f"{block_size}\n")
    (d / "size").write_text(f"{sectors}\n")
    ident = Identity(vendor=vendor, product=model, serial=serial, port_wwpn=wwpn)
    (d / "device" / "vpd_pg80").write_bytes(vpd_page(VPD_UNIT_SERIAL, ident, max_transfer_blocks=8))
    (d / "device" / "vpd_pg83").write_bytes(
        vpd83 if vpd83 is not None else vpd_page(VPD_DEVICE_ID, ident, max_transfer_blocks=8))
    return d
