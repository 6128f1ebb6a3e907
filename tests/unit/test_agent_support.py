"""A stand-in for guest_agent.client.ChannelClient (same API) with a tiny host behind it, and helpers
for the agent edge tests: a preadv that "parks" like the host does, and EIO injection.

The stand-in ignores the bytes on the disk for its logic (it is the host as well as the client), but
records them, so the edge tests can check what was read from where.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from edifd.proto import Keepalive, Message, MessageType, Response, Status

READ_BASE = 1024  # LBAs the stand-in parks READs at: apart, so nothing could merge them
READ_GAP = 16


@dataclass(frozen=True)
class ReadRequest:
    lba: int
    nblocks: int
    token: int


@dataclass(frozen=True)
class WriteRequest:
    lba: int
    payload: bytes
    token: int


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


def test_stand_in_answers_keepalive_after_handshake() -> None:
    c = FakeClient()
    c.start()
    w = c.next_write()
    assert w is not None and w.payload == b"APP_START"
    c.write_done(w.token, True)
    assert c.established
    rid = c.request(Keepalive())
    w = c.next_write()
    assert w is not None
    c.write_done(w.token, True)
    r = c.next_read()
    (msg,) = c.read_done(r.token, bytes(4096))
    assert msg.request_id == rid and msg.sequence == 1 and msg.type is MessageType.RESPONSE


def test_stand_in_restores_from_snapshot() -> None:
    c = FakeClient()
    c.start()
    w = c.next_write()
    assert w is not None
    c.write_done(w.token, True)
    c.request(Keepalive())
    c2 = FakeClient(state=c.snapshot())
    assert c2.established and c2.next_rid == 2
