"""REPORT LUNS helpers shared by the TCMU path and the FCP target."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.scsi import (
    ScsiCommand,
    SenseData,
    Status,
    cdb,
    encode_lun,
    fit_data_in,
    report_luns_data,
    respond_report_luns,
)


def test_encodings() -> None:
    assert encode_lun(0) == bytes(8)
    assert encode_lun(255) == b"\x00\xff" + bytes(6)
    assert encode_lun(256) == b"\x41\x00" + bytes(6)  # flat space addressing
    assert encode_lun(0x3FFF) == b"\x7f\xff" + bytes(6)


@pytest.mark.parametrize("bad", [-1, 0x4000, 1 << 40])
def test_lun_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        encode_lun(bad)


def test_report_luns_data_layout_and_order() -> None:
    d = report_luns_data([3, 0, 300], 4096)
    assert struct.unpack_from(">II", d) == (24, 0)
    assert d[8:] == encode_lun(3) + encode_lun(0) + encode_lun(300)


def test_report_luns_data_truncates_and_checks() -> None:
    assert report_luns_data([0, 1], 12) == report_luns_data([0, 1], 100)[:12]
    assert report_luns_data([], 100) == bytes(8)
    with pytest.raises(ValueError):
        report_luns_data([1, 1], 100)
    with pytest.raises(ValueError):
        report_luns_data([0], -1)


def test_fit_data_in() -> None:
    assert fit_data_in(b"abc", 5) == b"abc\x00\x00"
    assert fit_data_in(b"abcdef", 2) == b"ab"
    assert fit_data_in(b"abc", -4) == b""


def test_respond_report_luns_pads_to_buffer() -> None:
    r = respond_report_luns(ScsiCommand(cdb.report_luns(4096), b"", 512), [0, 1])
    assert r.status == Status.GOOD and len(r.data) == 512
    assert r.data[:24] == report_luns_data([0, 1], 4096) and r.data[24:] == bytes(488)


def test_respond_report_luns_select_report() -> None:
    r = respond_report_luns(ScsiCommand(cdb.report_luns(64, select=1), b"", 64), [0, 1])
    assert r.data == bytes(64)  # well-known LUs only: none
    r = respond_report_luns(ScsiCommand(cdb.report_luns(64, select=2), b"", 64), [5])
    assert r.data[8:16] == encode_lun(5)
    r = respond_report_luns(ScsiCommand(cdb.report_luns(64, select=0x10), b"", 64), [5])
    assert r.status == Status.CHECK_CONDITION and r.data == bytes(64)
    assert SenseData.parse(r.sense).field_pointer == (2, None)


def test_respond_report_luns_wrong_or_garbage_cdb() -> None:
    for c in (cdb.inquiry(), b"", b"\xa0\x00"):
        r = respond_report_luns(ScsiCommand(c, b"", 16), [0])
        assert r.status == Status.CHECK_CONDITION and r.data == bytes(16) and len(r.sense) == 18


@given(st.lists(st.integers(0, 0x3FFF), unique=True, max_size=50), st.integers(0, 600), st.integers(0, 600))
def test_respond_length_property(luns: list[int], alloc: int, buf: int) -> None:
    r = respond_report_luns(ScsiCommand(cdb.report_luns(alloc), b"", buf), luns)
    full = report_luns_data(luns, 1 << 20)
    k = min(alloc, buf, len(full))
    assert r.data[:k] == full[:k] and r.data[k:] == bytes(buf - k)
