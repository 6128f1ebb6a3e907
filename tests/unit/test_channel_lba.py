"""The LBA layout, the persisted host state and the reject table."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.channel import ChannelGeometry, GeometryError, HostState, HostStateError, Reject
from edifd.edges.state_file import StateFile
from edifd.proto.lba import LANES, OutsideWindowError
from edifd.scsi import SenseKey

G = ChannelGeometry(512, (16 << 20) // 512)


def test_sixteen_mib_layout():
    assert G.slot_blocks == 8 and G.guard_blocks == 2048 and G.window == 398
    assert G.write_base + G.window * G.slot_blocks <= G.num_blocks - G.guard_blocks
    assert not G.in_read_window(0) and not G.in_read_window(G.num_blocks - 1)


def test_too_small_lun_is_refused_with_the_minimum():
    with pytest.raises(GeometryError, match="too small"):
        ChannelGeometry(512, (4 << 20) // 512)
    with pytest.raises(GeometryError):
        ChannelGeometry(520, 1 << 20)


@pytest.mark.parametrize("bs", [512, 1024, 2048, 4096])
def test_every_block_size(bs):
    g = ChannelGeometry(bs, (64 << 20) // bs)
    lba = g.read_lba(12345, 3)
    assert g.parse_read(lba, g.slot_blocks) == (12345 % g.window, 3)
    assert g.parse_write(g.write_lba(77), 1) == 77 % g.window


@given(st.integers(0, 1 << 40), st.integers(0, LANES - 1))
def test_read_lba_roundtrip_and_unwrap(cursor, lane):
    residue, got_lane = G.parse_read(G.read_lba(cursor, lane), G.slot_blocks)
    assert got_lane == lane
    for near in (cursor, cursor - G.window // 2 + 1, cursor + G.window // 2):
        assert G.unwrap(residue, near) == cursor


@given(st.integers(0, G.num_blocks - 1), st.integers(0, 64))
def test_parse_write_accepts_only_slots_of_the_write_window(lba, n):
    try:
        residue = G.parse_write(lba, n)
    except OutsideWindowError:
        assert not G.write_base <= lba < G.write_base + G.window * G.slot_blocks
    except GeometryError:
        assert (lba - G.write_base) % G.slot_blocks or not 0 < n <= G.slot_blocks
    else:
        assert G.write_lba(residue) == lba and 0 < n <= G.slot_blocks


def test_lanes_never_touch():
    lbas = sorted(G.read_lba(c, lane) for c in range(0, 5) for lane in range(LANES))
    same_cursor = sorted(G.read_lba(7, lane) for lane in range(LANES))
    assert all(b - a >= G.window * G.slot_blocks for a, b in zip(same_cursor, same_cursor[1:], strict=False))
    assert len(set(lbas)) == len(lbas)


def test_host_state_roundtrip_and_corruption():
    s = HostState(3, 0x1234, 17, 4096, bytes(range(32)))
    assert HostState.unpack(s.pack()) == s
    bad = bytearray(s.pack())
    bad[10] ^= 1
    with pytest.raises(HostStateError):
        HostState.unpack(bytes(bad))
    with pytest.raises(HostStateError):
        HostState.unpack(b"short")


@given(st.binary(max_size=100))
def test_host_state_parser_raises_only_its_error(data):
    try:
        HostState.unpack(data)
    except HostStateError:
        pass


def test_state_file_roundtrip_and_torn_file_reads_as_none(tmp_path):
    f = StateFile(tmp_path / "ctl0.channel-state")
    assert f.load() is None
    s = HostState(0, 99, 5, 49, bytes(32))
    f.save(s)
    assert f.load() == s and os.stat(f.path).st_mode & 0o777 == 0o600
    os.truncate(f.path, 10)
    assert f.load() is None
    f.close()


def test_reject_senses_are_distinct_per_family_and_parse_back():
    senses = {r.value[1:] for r in Reject}
    assert len(senses) == len(Reject) - 1  # BAD_PROOF shares UNAUTHENTICATED's sense
    for r in Reject:
        assert Reject.from_sense(*r.value[1:]) in (r, Reject.UNAUTHENTICATED)
        assert r.value[1] in (SenseKey.ILLEGAL_REQUEST, SenseKey.DATA_PROTECT)
