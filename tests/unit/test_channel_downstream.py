"""Downstream delivery rules through the SCSI layer: retries acted on once, gaps, replays, wrong
keys, bad proofs, malformed WRITEs, and any WRITE or READ at all never acted on."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.channel import Reject
from edifd.channel.loopback import read_cdb, write_cdb
from edifd.proto import (
    AppStart,
    AppStartPhase,
    GetPortInfo,
    Keepalive,
    LinkUp,
    Message,
    encode,
    new_nonce,
)
from edifd.proto.lba import SLOT_BYTES
from edifd.scsi import Pending, ScsiDisk
from edifd.scsi import Status as ScsiStatus
from tests.support.channel import (
    KEY,
    N_BLOCKS,
    OTHER_KEY,
    CountingHandler,
    established,
    loop,
    make_client,
    make_core,
    raw_write,
    reject_sense,
    sense_of,
)
from tests.support.clock import Clock


def test_duplicate_write_is_good_counted_and_acted_on_once(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    rid = client.request(GetPortInfo())
    resp = lb.write_once(duplicate=True)
    assert resp.status == ScsiStatus.GOOD
    assert len(h.handled) == 1 and core.counters["retries"] == 1
    msgs = lb.pump()
    assert [m.request_id for m in msgs] == [rid]


def test_write_whose_status_is_lost_is_retried_with_same_lba_and_payload_and_acted_on_once(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    rid = client.request(Keepalive())
    w1 = client.next_write()
    lb.disk.execute(write_cdb(w1.lba, w1.payload, 512))
    client.write_done(w1.token, False)  # e.g. the guest saw EIO although the host acted
    w2 = client.next_write()
    assert (w2.lba, w2.payload) == (w1.lba, w1.payload)
    assert lb.disk.execute(write_cdb(w2.lba, w2.payload, 512)).status == ScsiStatus.GOOD
    client.write_done(w2.token, True)
    assert core.counters["retries"] == 1 and core.counters["messages_in"] == 1
    msgs = lb.pump()
    assert [m.request_id for m in msgs] == [rid] and client.counters["write_retries"] == 1


def test_gap_is_refused_with_sequence_sense_and_not_acted_on(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    resp, _ = raw_write(core, clock, GetPortInfo(), 2)  # expected: 1
    assert resp.status == ScsiStatus.CHECK_CONDITION and sense_of(resp) == reject_sense(Reject.GAP)
    assert h.handled == [] and core.counters["rejected_gap"] == 1
    resp, _ = raw_write(core, clock, GetPortInfo(), 1)
    assert resp.status == ScsiStatus.GOOD and len(h.handled) == 1


def test_replay_of_an_old_write_is_refused(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    client.request(Keepalive())
    w = client.next_write()
    first = write_cdb(w.lba, w.payload, 512)
    lb.disk.execute(first)
    client.write_done(w.token, True)
    for _ in range(20):  # the host remembers only recent WRITEs as retries
        client.request(Keepalive())
        lb.pump()
    resp = lb.disk.execute(first)
    assert sense_of(resp) == reject_sense(Reject.REPLAY) and core.counters["rejected_replay"] == 1
    # Same sequence, different (authentic) content: also a replay, never acted on.
    n = len(h.handled)
    resp, _ = raw_write(core, clock, GetPortInfo(), core._down.current.down_next - 1, rid=12345)
    assert sense_of(resp) == reject_sense(Reject.REPLAY) and len(h.handled) == n


def test_wrong_key_is_rejected_counted_logged_once_per_burst_and_never_acted_on(clock, caplog):
    h = CountingHandler()
    core = make_core(clock, h)
    client = make_client(clock, key=OTHER_KEY)
    lb = loop(core, client)
    client.start()
    caplog.set_level(logging.WARNING, logger="edifd.channel")
    for _ in range(5):
        resp = lb.write_once()
        assert sense_of(resp) == reject_sense(Reject.UNAUTHENTICATED)
    assert core.counters["rejected_bad_mac"] == 5 and not core.established and not client.established
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "bad_mac" in lines[0]
    clock.now += 11  # a new burst is logged again, with the count of the suppressed ones
    lb.write_once()
    assert "4 more suppressed" in caplog.records[-1].getMessage()
    text = " ".join(r.getMessage() for r in caplog.records) + repr(core.status())
    for k in (KEY, OTHER_KEY):
        assert k.material.hex() not in text and k.material.hex().upper() not in text


def test_bad_proof_and_proof_without_challenge_are_refused(clock):
    core = make_core(clock)
    disk = ScsiDisk(core)
    na = new_nonce()
    proof = AppStart(AppStartPhase.PROOF, na, new_nonce(), bytes(32))
    resp = disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(proof, 0, 0, 1, 0), KEY), 512))
    assert sense_of(resp) == reject_sense(Reject.REPLAY)
    hello = AppStart(AppStartPhase.HELLO, na)
    assert disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(hello, 0, 0, 1, 0), KEY),
                                  512)).status == ScsiStatus.GOOD
    nh = core._down.challenge[1]
    bad = AppStart(AppStartPhase.PROOF, na, nh, bytes(range(32)))
    resp = disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(bad, 0, 0, 1, 0), KEY), 512))
    assert sense_of(resp) == reject_sense(Reject.BAD_PROOF) and not core.established


@pytest.mark.parametrize("case", ["bad_padding", "truncated", "oversized_write", "outside_window",
                                  "wrong_port", "slot_mismatch", "upstream_type", "garbage", "bad_version"])
def test_malformed_writes_are_refused_with_their_family_sense_and_not_acted_on(clock, case):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    g = core.geometry
    keys = core.epoch_keys
    good = encode(Message(GetPortInfo(), 0, core._down.current.epoch, 5, 1), KEY, keys=keys)
    lba, data, want = g.write_lba(1), good, None
    if case == "bad_padding":
        data = good[:-1] + b"\x01"
        want = Reject.MALFORMED
    elif case == "truncated":
        # Declares a 2000-byte body in a one-block WRITE.
        data = bytearray(good)
        struct.pack_into(">I", data, 12, 2000)
        data = bytes(data)
        want = Reject.BAD_LENGTH
    elif case == "oversized_write":
        data = good.ljust(SLOT_BYTES + 512, b"\x00")
        want = Reject.BAD_LENGTH
    elif case == "outside_window":
        lba = 0
        want = Reject.OUTSIDE_WINDOW
    elif case == "wrong_port":
        data = encode(Message(GetPortInfo(), 3, core._down.current.epoch, 5, 1), KEY, keys=keys)
        want = Reject.WRONG_PORT
    elif case == "slot_mismatch":
        lba = g.write_lba(7)
        want = Reject.SLOT_MISMATCH
    elif case == "upstream_type":
        data = encode(Message(LinkUp(), 0, core._down.current.epoch, 0, 1), KEY, keys=keys)
        want = Reject.MALFORMED
    elif case == "garbage":
        data = bytes(range(256)) * 2
        want = Reject.MALFORMED
    elif case == "bad_version":
        data = b"EDIF\x03" + good[5:]
        want = Reject.MALFORMED
    resp = lb.disk.execute(write_cdb(lba, data, 512))
    assert resp.status == ScsiStatus.CHECK_CONDITION and sense_of(resp) == reject_sense(want)
    assert h.handled == [] and core.counters[f"rejected_{want.counter}"] == 1
    assert core._down.current.down_next == 1  # nothing consumed: the real message 1 still goes through
    client.request(GetPortInfo())
    lb.pump()
    assert len(h.handled) == 1


_FUZZ = {}


def _fuzz_world():
    if not _FUZZ:
        h = CountingHandler()
        lb, core, client = established(Clock(), handler=h)
        _FUZZ.update(lb=lb, core=core, handler=h)
    return _FUZZ["lb"], _FUZZ["core"], _FUZZ["handler"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, N_BLOCKS - 1), st.integers(1, 16), st.binary(max_size=8192), st.booleans())
def test_any_write_or_read_is_answered_without_internal_errors_and_never_acted_on(lba, n, data, read):
    lb, core, h = _fuzz_world()
    if read:
        r = lb.disk.execute(read_cdb(lba, n, 512))
        if isinstance(r, Pending):
            core.release_all()
    else:
        resp = lb.disk.execute(write_cdb(lba, data.ljust(n * 512, b"\x00")[: n * 512], 512))
        assert resp.status == ScsiStatus.CHECK_CONDITION
    assert lb.disk.internal_errors == 0 and h.handled == []
