"""Fixed-format sense: layout byte by byte, the exception that carries it, and the parser."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.scsi.sense import (
    Asc,
    CheckCondition,
    MediumError,
    SenseData,
    SenseKey,
    SenseParseError,
    invalid_field,
    sense,
)


def test_layout_is_spc4_fixed_format() -> None:
    s = sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
    assert len(s) == 18
    assert s[0] == 0x70  # current error, VALID=0
    assert s[2] == 0x05
    assert s[7] == 10  # additional sense length: bytes 8..17
    assert (s[12], s[13]) == (0x24, 0x00)
    assert s[3:7] == bytes(4) and s[15:18] == bytes(3)


def test_information_sets_valid_and_field() -> None:
    s = sense(SenseKey.MISCOMPARE, 0x1D, 0x00, information=0x01020304)
    assert s[0] == 0xF0
    assert s[3:7] == bytes([1, 2, 3, 4])


def test_information_too_large_is_dropped() -> None:
    s = sense(SenseKey.MISCOMPARE, 0x1D, 0x00, information=1 << 32)
    assert s[0] == 0x70 and s[3:7] == bytes(4)


def test_field_pointer_with_and_without_bit() -> None:
    s = sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0, field_pointer=(7, 3))
    assert s[15] == 0x80 | 0x40 | 0x08 | 3
    assert s[16:18] == b"\x00\x07"
    s = sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0, field_pointer=(2, None))
    assert s[15] == 0xC0 and s[16:18] == b"\x00\x02"


@pytest.mark.parametrize(
    "args", [(16, 0, 0), (-1, 0, 0), (5, 256, 0), (5, 0, 256)]
)
def test_out_of_range_codes_raise_value_error(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        sense(*args)


def test_bad_field_pointer_raises() -> None:
    with pytest.raises(ValueError):
        sense(5, 0x24, 0, field_pointer=(1, 8))


def test_check_condition_carries_sense() -> None:
    e = CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert (e.key, e.asc, e.ascq) == (5, 0x21, 0)
    assert e.sense == sense(5, 0x21, 0)
    assert "5/21/00" in str(e)


def test_medium_error_is_a_check_condition() -> None:
    e = MediumError(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
    assert isinstance(e, CheckCondition)
    assert SenseData.parse(e.sense) == SenseData(3, 0x11, 0)


def test_invalid_field_points_into_cdb() -> None:
    sd = SenseData.parse(invalid_field(4, 1).sense)
    assert sd == SenseData(5, 0x24, 0, None, (4, 1))


def test_parse_round_trip() -> None:
    s = sense(SenseKey.MISCOMPARE, 0x1D, 0, information=77)
    assert SenseData.parse(s) == SenseData(0xE, 0x1D, 0, 77, None)


@pytest.mark.parametrize("data", [b"", bytes(13), bytes([0x72]) + bytes(17), bytes([0x00]) + bytes(17)])
def test_parse_rejects_non_fixed(data: bytes) -> None:
    with pytest.raises(SenseParseError):
        SenseData.parse(data)


@given(st.binary(max_size=64))
def test_parse_raises_only_its_own_error(data: bytes) -> None:
    try:
        SenseData.parse(data)
    except SenseParseError:
        pass
