"""CDB builders: exact bytes for a few well-known CDBs, and range errors instead of wrapping."""

import pytest

from edifd.scsi import cdb


def test_known_layouts() -> None:
    assert cdb.tur() == bytes(6)
    assert cdb.inquiry(0x1234, evpd=True, page=0x83) == bytes.fromhex("120183123400")
    assert cdb.read(0x01020304, 0x0506) == bytes.fromhex("28000102030400050600")
    w16 = bytes.fromhex("8a08" + "0000000000000001" + "00000002" + "0000")
    assert cdb.write(1, 2, size=16, fua=True) == w16
    assert cdb.read(0x1FFFFF, 256, size=6) == bytes.fromhex("081fffff0000")
    assert cdb.verify(7, 1, size=12) == bytes.fromhex("af02" + "00000007" + "00000001" + "0000")
    assert cdb.synchronize_cache(immed=True) == bytes.fromhex("35020000000000000000")
    assert cdb.read_capacity16(32) == bytes.fromhex("9e10" + "00" * 8 + "00000020" + "0000")
    assert cdb.report_supported_opcodes(option=2, opcode=0x9E, sa=0x10, rctd=True)[:6] == bytes.fromhex(
        "a30c829e0010"
    )
    assert cdb.mode_sense10(0x08, 0x200, llbaa=True, dbd=True) == bytes.fromhex("5a180800000000020000")


@pytest.mark.parametrize(
    "build",
    [
        lambda: cdb.read(0, 0x10000),  # READ(10) length is 16 bits
        lambda: cdb.read(1 << 32, 1),
        lambda: cdb.read(1 << 21, 1, size=6),
        lambda: cdb.read(0, 0, size=6),
        lambda: cdb.verify(0, 1, size=6),
        lambda: cdb.synchronize_cache(size=12),
        lambda: cdb.inquiry(0x10000),
    ],
)
def test_out_of_range_raises_value_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()
