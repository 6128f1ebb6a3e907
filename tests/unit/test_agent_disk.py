"""guest_agent.disk: the reader/writer loops over a regular file (no O_DIRECT), with the stand-in client."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import threading
import time

import pytest

from edifd.proto import EpochKeys, Heartbeat, Keepalive, Message, MessageType, encode
from guest_agent import disk as disk_mod
from guest_agent.backoff import Backoff
from guest_agent.client import ChannelClient
from guest_agent.disk import AlignedBuffer, ControlDiskEndpoint
from tests.support import agent_disk
from tests.support.agent import READ_BASE, FakeClient, parking_preadv
from tests.support.agent_disk import BLOCKS, BS, handshake_and_ping, wait_until
from tests.support.channel import KEY, N_BLOCKS

image, parked = agent_disk.image, agent_disk.parked  # the shared fixtures, found by name


class Sleeps:
    """Backoff sleeps recorded instead of slept (returns at once; True = stop was requested)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, ev: threading.Event, s: float) -> bool:
        with self.lock:
            self.delays.append(s)
        return ev.is_set()


def test_reads_come_from_the_requested_lbas_and_writes_land_whole_blocks(image, parked):
    path, data = image
    c = FakeClient(capacity_blocks=BLOCKS)
    parked(c)
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=4, direct=False)
    with ep:
        msgs = handshake_and_ping(ep, c, 5)
    assert [m.sequence for m in msgs] == [1, 2, 3, 4, 5]
    assert all(m.type is MessageType.RESPONSE for m in msgs)
    assert c.read_data, "no READ completed"
    for lba, got in c.read_data:
        assert lba >= READ_BASE
        assert got == data[lba * BS : (lba + 8) * BS]
    on_disk = path.read_bytes()
    assert len(c.written) == 6  # APP_START + 5 requests
    for lba, payload in c.written:
        n = -(-len(payload) // BS) * BS
        assert on_disk[lba * BS : lba * BS + n] == payload + bytes(n - len(payload))
    assert ep.counters["writes_ok"] == 6 and ep.counters["messages_in"] == 5
    assert ep.counters["read_errors"] == 0 and ep.fatal is None


def test_keeps_k_reads_parked_at_distinct_lbas(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)
    with ControlDiskEndpoint(c, str(path), block_size=BS, parked=6, direct=False) as ep:
        wait_until(lambda: len(c.reads_out) == 6)
        with ep.lock:
            lbas = [r.lba for r in c.reads_out.values()]
    assert len(set(lbas)) == 6


def test_eio_on_a_read_is_reported_and_rearmed_with_growing_backoff(image, parked):
    path, data = image
    c = FakeClient()
    fn = parked(c, eio_first=4)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=1, direct=False, sleep=sleeps,
                             backoff=lambda: Backoff(initial=0.1, maximum=0.4))
    with ep:
        handshake_and_ping(ep, c, 2)
    assert fn.calls["n"] > 4
    assert len(c.failed_reads) == 4 and ep.counters["read_errors"] == 4
    assert sleeps.delays[:4] == [0.1, 0.2, 0.4, 0.4]  # doubles, bounded by maximum
    assert "Input/output error" in (ep.last_error or "")
    # Once a READ succeeds again, data flows from the right place.
    assert all(got == data[lba * BS : (lba + 8) * BS] for lba, got in c.read_data)


def test_backoff_resets_after_a_success(image, parked, monkeypatch):
    path, _ = image
    c = FakeClient()
    ref = [c]
    calls = {"n": 0}
    real = parking_preadv(ref)

    def flaky(fd, bufs, off):  # fail, fail, succeed, fail
        calls["n"] += 1
        if calls["n"] in (1, 2, 4):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, bufs, off)

    monkeypatch.setattr(disk_mod.os, "preadv", flaky)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=1, direct=False, sleep=sleeps,
                             backoff=lambda: Backoff(initial=1.0, maximum=8.0))
    with ep:
        wait_until(lambda: calls["n"] >= 5)
    assert sleeps.delays[:3] == [1.0, 2.0, 1.0]


def test_short_read_past_the_end_is_a_failed_read(tmp_path, parked):
    p = tmp_path / "tiny.img"
    p.write_bytes(bytes(BS * 16))  # READs at LBA >= 1024 find nothing there
    c = FakeClient()
    parked(c)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(c, str(p), block_size=BS, parked=1, direct=False, sleep=sleeps)
    with ep:
        wait_until(lambda: len(c.failed_reads) >= 2)
    assert ep.counters["short_reads"] >= 2
    assert "0 of 4096 bytes" in (ep.last_error or "")
    assert c.read_data == []


def test_failed_write_is_retried_after_backoff(image, parked, monkeypatch):
    path, _ = image
    c = FakeClient()
    parked(c)
    real = os.pwritev
    calls = {"n": 0}

    def flaky(fd, bufs, off):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, bufs, off)

    monkeypatch.setattr(disk_mod.os, "pwritev", flaky)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False, sleep=sleeps,
                             backoff=lambda: Backoff(initial=0.5, maximum=5))
    with ep:
        handshake_and_ping(ep, c, 1)
    assert c.write_failures == 2 and ep.counters["write_errors"] == 2
    assert [payload for _, payload in c.written][0] == b"APP_START"
    assert 0.5 in sleeps.delays and 1.0 in sleeps.delays


def test_state_is_persisted_before_messages_are_handed_over(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)
    saved: list[bytes] = []
    seen_at_delivery: list[int] = []

    def persist(b: bytes) -> None:
        saved.append(b)

    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False, persist=persist)
    with ep:
        ep.call(lambda cl: cl.start())
        wait_until(lambda: c.established)
        for _ in range(3):
            ep.call(lambda cl: cl.request(Keepalive()))
            m = ep.inbox.get(timeout=10)
            seen_at_delivery.append(len(saved))
            assert m.sequence <= FakeClient(state=saved[-1]).up_seq  # the saved state covers it
        assert saved and all(n > 0 for n in seen_at_delivery)
        # Idle READs (nothing delivered, client state unchanged) write nothing.
        n_saved, n_reads = len(saved), ep.counters["reads_ok"]
        wait_until(lambda: ep.counters["reads_ok"] >= n_reads + 8)
        assert len(saved) == n_saved


def test_on_message_runs_before_the_state_is_saved(image, parked):
    """The application's record and the client snapshot are saved as one consistent pair."""
    path, _ = image
    c = FakeClient()
    parked(c)
    recorded: list[int] = []
    pairs: list[tuple[int, list[int]]] = []

    def persist(snap: bytes) -> None:
        pairs.append((len(recorded), list(recorded)))

    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=3, direct=False, persist=persist,
                             on_message=lambda m: recorded.append(m.sequence))
    with ep:
        ep.call(lambda cl: cl.start())
        wait_until(lambda: c.established)
        for _ in range(4):
            ep.call(lambda cl: cl.request(Keepalive()))
        wait_until(lambda: len(recorded) == 4)
        wait_until(lambda: pairs and pairs[-1][0] == 4)
    assert recorded == [1, 2, 3, 4]
    assert ep.inbox.empty()  # with on_message, nothing goes to the queue


def test_persist_error_is_counted_not_fatal(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)

    def persist(b: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False, persist=persist)
    with ep:
        handshake_and_ping(ep, c, 2)
    assert ep.counters["persist_errors"] >= 1 and ep.fatal is None
    assert "No space left" in (ep.last_error or "")


def test_a_client_error_stops_the_endpoint(image, parked):
    path, _ = image

    class Broken(FakeClient):
        def next_read(self):
            raise RuntimeError("cursor corrupted")

    c = Broken()
    parked(c)
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False)
    ep.start()
    wait_until(lambda: ep.stopping)
    assert "cursor corrupted" in (ep.fatal or "")
    assert ep.stop(timeout=5)


def test_stop_joins_threads_and_closes_the_fd(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=4, direct=False)
    ep.start()
    fd = ep._fd
    assert fd is not None
    assert ep.stop(timeout=5)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_open_error_names_the_path(tmp_path):
    ep = ControlDiskEndpoint(FakeClient(), str(tmp_path / "missing"), direct=False)
    with pytest.raises(OSError, match="cannot open control disk .*missing"):
        ep.open()


@pytest.mark.parametrize("bad", [{"parked": 0}, {"block_size": 0}, {"block_size": 1000}])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        ControlDiskEndpoint(FakeClient(), "/dev/null", **bad)


def test_aligned_buffer_is_page_aligned_and_grows():
    b = AlignedBuffer(512)
    v = b.view(4096)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(v))
    assert addr % 4096 == 0 and len(v) == 4096
    del addr
    v.release()
    v = b.view(3 * 4096 + 1)
    assert ctypes.addressof(ctypes.c_char.from_buffer(v)) % 4096 == 0 and len(v) == 3 * 4096 + 1
    v.release()
    b.close()


def test_status_reports_edge_and_channel_counters_without_secrets(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)
    with ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False) as ep:
        handshake_and_ping(ep, c, 1)
        st = ep.status()
    assert st["established"] is True
    assert st["channel"]["requests"] == 1 and st["edge"]["writes_ok"] == 2
    assert set(st) == {"path", "parked", "direct", "edge", "channel", "established", "last_error"}


# -- a disk that answers nonsense (issue 10, safety 2) ----------------------------------------------


class WaitingSleeps(Sleeps):
    """Backoff sleeps recorded and really waited, so the loop runs at the pace the backoff allows."""

    def __call__(self, ev: threading.Event, s: float) -> bool:
        with self.lock:
            self.delays.append(s)
        return ev.wait(s)


def answering(make, pause: float = 0.0):
    """An os.preadv that completes every READ (after `pause`) with make(length, offset), counted."""
    calls = {"n": 0}
    lock = threading.Lock()

    def preadv(fd, bufs, offset):
        (buf,) = bufs
        with lock:
            calls["n"] += 1
        if pause:
            time.sleep(pause)
        buf[:] = make(len(buf), offset)
        return len(buf)

    preadv.calls = calls  # type: ignore[attr-defined]
    return preadv


def heartbeat(n: int, _off: int) -> bytes:
    return encode(Message(Heartbeat(), 0, 0, 0, 0), KEY, block_size=BS, pad_to=n)


NONSENSE = {
    "random": lambda n, off: random.Random(off).randbytes(n),
    "zeros": lambda n, off: bytes(n),  # a fresh file or another LUN's blank blocks
    "own WRITE read back": lambda n, off: encode(Message(Keepalive(), 0, 1, 7, 1), KEY, block_size=BS,
                                                  pad_to=n, keys=EpochKeys.derive(KEY, 0, bytes(32),
                                                                                  bytes(32), 1)),
    "another key": lambda n, off: encode(Message(Heartbeat(), 0, 0, 0, 0), b"\x99" * 32, block_size=BS,
                                         pad_to=n),
}


@pytest.fixture
def blank(tmp_path):
    p = tmp_path / "disk.img"
    with open(p, "wb") as fh:
        fh.truncate(N_BLOCKS * BS)
    return p


@pytest.mark.parametrize("nonsense", NONSENSE.values(), ids=NONSENSE.keys())
def test_a_disk_answering_nonsense_is_read_after_a_backoff_not_in_a_spin(blank, monkeypatch, nonsense):
    """The real client rejects every READ's data; each rejected READ is followed by a backoff wait
    (1 ms doubling to 20 ms here) instead of an immediate re-issue (~60k READs a second before)."""
    fn = answering(nonsense)
    monkeypatch.setattr(disk_mod.os, "preadv", fn)
    c = ChannelClient(KEY, capacity_blocks=N_BLOCKS)
    sleeps = WaitingSleeps()
    ep = ControlDiskEndpoint(c, str(blank), block_size=BS, parked=4, direct=False, sleep=sleeps,
                             backoff=lambda: Backoff(initial=0.001, maximum=0.02))
    ep.start()
    try:
        time.sleep(0.5)
    finally:
        assert ep.stop(timeout=5)
    reads = fn.calls["n"]
    assert reads >= 4 and c.counters["rejected"] == reads  # every READ was nonsense to the client
    assert (ep.counters["backoff_waits"], len(sleeps.delays)) == (reads, reads)  # one wait per READ
    assert reads < 2000  # ~25 per reader at the 20 ms cap; generous
    assert set(sleeps.delays) <= {0.001, 0.002, 0.004, 0.008, 0.016, 0.02} and max(sleeps.delays) == 0.02
    assert ep.counters["nonsense_reads"] == reads and ep.counters["read_errors"] == 0
    assert "not a channel message" in (ep.last_error or "") and ep.fatal is None


def test_heartbeats_rearm_at_once_without_backoff(blank, monkeypatch):
    fn = answering(heartbeat, pause=0.002)  # the host's heartbeat, after a (very short) park time
    monkeypatch.setattr(disk_mod.os, "preadv", fn)
    c = ChannelClient(KEY, capacity_blocks=N_BLOCKS)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(c, str(blank), block_size=BS, parked=4, direct=False, sleep=sleeps)
    ep.start()
    try:
        wait_until(lambda: fn.calls["n"] >= 40)
    finally:
        assert ep.stop(timeout=5)
    assert c.counters["heartbeats"] >= 40 and c.counters["rejected"] == 0
    assert ep.counters.get("nonsense_reads", 0) == 0 and ep.counters["backoff_waits"] == 0
    assert sleeps.delays == []


def test_nonsense_backoff_grows_and_resets_after_a_good_read(blank, monkeypatch):
    script = {"n": 0}
    junk = NONSENSE["zeros"]

    def make(n, off):  # nonsense, nonsense, heartbeat, nonsense, then heartbeats
        script["n"] += 1
        return junk(n, off) if script["n"] in (1, 2, 4) else heartbeat(n, off)

    fn = answering(make, pause=0.002)
    monkeypatch.setattr(disk_mod.os, "preadv", fn)
    sleeps = Sleeps()
    ep = ControlDiskEndpoint(ChannelClient(KEY, capacity_blocks=N_BLOCKS), str(blank), block_size=BS,
                             parked=1, direct=False, sleep=sleeps,
                             backoff=lambda: Backoff(initial=1.0, maximum=8.0))
    ep.start()
    try:
        wait_until(lambda: fn.calls["n"] >= 6)
    finally:
        assert ep.stop(timeout=5)
    assert sleeps.delays == [1.0, 2.0, 1.0] and ep.counters["nonsense_reads"] == 3
