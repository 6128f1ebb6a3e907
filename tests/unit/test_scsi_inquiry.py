"""Identity validation and INQUIRY: the standard page, every VPD page, allocation length, padding."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.scsi import Identity, MemoryMedium, ScsiCommand, ScsiDisk, ScsiResponse, SenseData, Status, cdb
from edifd.scsi.identity import derive_naa6

WWPN = 0x2100_0024_FF12_3456


def run(disk: ScsiDisk, c: bytes, data_in_len: int) -> ScsiResponse:
    r = disk.execute(ScsiCommand(c, b"", data_in_len))
    assert isinstance(r, ScsiResponse)
    assert len(r.data) == data_in_len
    return r


def good(disk: ScsiDisk, c: bytes, data_in_len: int = 4096) -> bytes:
    r = run(disk, c, data_in_len)
    assert r.status == Status.GOOD, SenseData.parse(r.sense)
    return r.data


def vpd(disk: ScsiDisk, page: int) -> bytes:
    """The page, cut at its own length; asserts everything after it is zero."""
    data = good(disk, cdb.inquiry(4096, evpd=True, page=page))
    n = 4 + struct.unpack_from(">H", data, 2)[0]
    assert data[n:] == bytes(len(data) - n), "padding must be zero"
    return data[:n]


def designators(page83: bytes) -> list[tuple[int, int, bytes]]:
    out, off = [], 4
    while off < len(page83):
        b0, b1, _, n = page83[off : off + 4]
        out.append((b0, b1, page83[off + 4 : off + 4 + n]))
        off += 4 + n
    assert off == len(page83)
    return out


@pytest.fixture
def disk() -> ScsiDisk:
    ident = Identity(vendor="EDIF", product="CTRL", revision="0100", serial="ctl0-abc", port_wwpn=WWPN)
    return ScsiDisk(MemoryMedium(4096), ident)


# --- Identity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"vendor": "TOOLONGVENDOR"},
        {"product": "P" * 17},
        {"revision": "12345"},
        {"serial": ""},
        {"serial": "s" * 252},
        {"vendor": "caf\u00e9"},
        {"product": "tab\there"},
        {"naa": 0x1234},  # 64-bit but not NAA-5
        {"naa": 0x5 << 124},  # 128-bit but not NAA-6
        {"naa": -1},
        {"oui": 1 << 24},
        {"port_wwpn": 0},
        {"port_wwpn": 1 << 64},
        {"relative_port": 0},
    ],
)
def test_identity_rejects_bad_fields(kw: dict) -> None:
    with pytest.raises(ValueError):
        Identity(**kw)


def test_identity_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        Identity(vendor=b"EDIF")  # type: ignore[arg-type]


def test_naa_derived_from_serial_is_stable_naa6() -> None:
    a, b = Identity(serial="x1"), Identity(serial="x1")
    assert a.naa_bytes() == b.naa_bytes()
    nb = a.naa_bytes()
    assert len(nb) == 16 and nb[0] >> 4 == 6
    assert int.from_bytes(nb, "big") >> 100 & 0xFFFFFF == 0x001405
    assert Identity(serial="x2").naa_bytes() != nb
    other_oui = int.from_bytes(Identity(serial="x1", oui=0xABCDEF).naa_bytes(), "big")
    assert other_oui >> 100 & 0xFFFFFF == 0xABCDEF


def test_derive_naa6_layout() -> None:
    v = derive_naa6(b"seed", 0x123456)
    assert v >> 124 == 6 and (v >> 100) & 0xFFFFFF == 0x123456 and v < 1 << 128
    with pytest.raises(ValueError):
        derive_naa6(b"seed", 1 << 24)
    assert derive_naa6(WWPN) == derive_naa6(WWPN.to_bytes(16, "big")) != derive_naa6(WWPN + 1)
    assert Identity(naa=derive_naa6(WWPN)).naa_bytes() == derive_naa6(WWPN).to_bytes(16, "big")
    with pytest.raises(ValueError):
        derive_naa6(-1)


def test_given_naa_is_used_verbatim() -> None:
    assert Identity(naa=0x5001405ABCDEF012).naa_bytes() == bytes.fromhex("5001405abcdef012")
    v = (6 << 124) | 0x1234
    assert Identity(naa=v).naa_bytes() == v.to_bytes(16, "big")


# --- standard INQUIRY -------------------------------------------------------------------------------


def test_standard_inquiry_fields(disk: ScsiDisk) -> None:
    d = good(disk, cdb.inquiry(260), 260)
    assert d[0] == 0x00  # PQ 0, direct access
    assert d[2] == 0x06  # SPC-4
    assert d[3] & 0x0F == 2 and d[3] & 0x10  # response format 2, HISUP
    assert d[3] & 0xC0 == 0  # no AERC/TRMTSK (libiscsi checks these)
    assert d[5] & 0x01 == 0  # PROTECT=0
    assert d[7] & 0x02  # CMDQUE
    assert d[8:16] == b"EDIF    " and d[16:32] == b"CTRL".ljust(16) and d[32:36] == b"0100"
    n = d[4] + 5
    assert n == 96
    versions = struct.unpack_from(">8H", d, 58)
    assert 0x0460 in versions and 0x04C0 in versions
    assert d[n:] == bytes(260 - n)  # no leaked bytes past the data (libiscsi Inquiry.Standard)


@pytest.mark.parametrize("alloc", [0, 1, 5, 35, 36, 95, 96, 255, 511, 512])
@pytest.mark.parametrize("buf", [0, 36, 96, 300, 1024])
def test_standard_inquiry_allocation_length_and_buffer(disk: ScsiDisk, alloc: int, buf: int) -> None:
    full = good(disk, cdb.inquiry(1024), 1024)[:96]
    d = good(disk, cdb.inquiry(alloc), buf)
    k = min(alloc, 96, buf)
    assert d[:k] == full[:k]
    assert d[k:] == bytes(buf - k)


def test_inquiry_alloc_511_equals_512(disk: ScsiDisk) -> None:
    assert good(disk, cdb.inquiry(511), 511) == good(disk, cdb.inquiry(512), 512)[:511]


def test_page_code_without_evpd_is_invalid_field(disk: ScsiDisk) -> None:
    r = run(disk, cdb.inquiry(256, page=0x80), 256)
    assert r.status == Status.CHECK_CONDITION and r.data == bytes(256)
    assert SenseData.parse(r.sense) == SenseData(5, 0x24, 0, None, (2, None))


def test_cmddt_bit_is_invalid_field(disk: ScsiDisk) -> None:
    r = run(disk, bytes([0x12, 0x02, 0, 0, 96, 0]), 96)
    assert SenseData.parse(r.sense).field_pointer == (1, 1)


# --- VPD --------------------------------------------------------------------------------------------


def test_supported_pages_sorted_and_each_answers(disk: ScsiDisk) -> None:
    p = vpd(disk, 0x00)
    pages = list(p[4:])
    assert pages == [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    assert pages == sorted(set(pages))
    for code in pages:
        assert vpd(disk, code)[1] == code


@pytest.mark.parametrize("page", [0x01, 0x7F, 0x81, 0x86, 0x89, 0xB3, 0xFF])
def test_unsupported_vpd_page_is_invalid_field(disk: ScsiDisk, page: int) -> None:
    r = run(disk, cdb.inquiry(255, evpd=True, page=page), 255)
    assert SenseData.parse(r.sense) == SenseData(5, 0x24, 0, None, (2, None))


def test_unit_serial(disk: ScsiDisk) -> None:
    assert vpd(disk, 0x80) == b"\x00\x80\x00\x08ctl0-abc"


def test_device_identification_with_wwpn(disk: ScsiDisk) -> None:
    ds = designators(vpd(disk, 0x83))
    naa, t10, port, rel = ds
    assert naa == (0x01, 0x03, disk.identity.naa_bytes())  # binary, LU, NAA
    assert t10 == (0x02, 0x01, b"EDIF    ctl0-abc")  # ASCII, LU, T10 vendor id
    # PROTOCOL IDENTIFIER 0 (FC) | binary; PIV=1, association target port (1), type NAA (3)
    assert port == (0x01, 0x93, WWPN.to_bytes(8, "big"))
    assert rel == (0x01, 0x94, b"\x00\x00\x00\x01")


def test_device_identification_without_wwpn() -> None:
    d = ScsiDisk(MemoryMedium(8), Identity(serial="s"))
    ds = designators(vpd(d, 0x83))
    assert [x[1] & 0x30 for x in ds] == [0, 0]  # LU designators only


@pytest.mark.parametrize("bs,max_bytes", [(512, 1 << 20), (4096, 1 << 20), (512, 64 << 10)])
def test_block_limits_consistent(bs: int, max_bytes: int) -> None:
    d = ScsiDisk(MemoryMedium(64, bs), max_transfer_bytes=max_bytes)
    p = vpd(d, 0xB0)
    assert len(p) == 64 and p[3] == 0x3C  # SBC-3 length, as claimed by the version descriptor
    max_xfer = struct.unpack_from(">I", p, 8)[0]
    assert max_xfer == max_bytes // bs
    assert struct.unpack_from(">I", p, 12)[0] <= max_xfer  # optimal <= maximum
    assert struct.unpack_from(">II", p, 20) == (0, 0)  # no UNMAP, matching LBPU=0 in 0xB2
    assert p[5] == 0  # no COMPARE AND WRITE


def test_block_device_characteristics_non_rotating(disk: ScsiDisk) -> None:
    p = vpd(disk, 0xB1)
    assert len(p) == 64 and struct.unpack_from(">H", p, 4)[0] == 1


def test_logical_block_provisioning_matches_read_capacity16(disk: ScsiDisk) -> None:
    p = vpd(disk, 0xB2)
    assert p == b"\x00\xb2\x00\x04" + bytes(4)  # no LBPU/LBPWS/LBPRZ, fully provisioned
    rc16 = good(disk, cdb.read_capacity16(32), 32)
    assert rc16[14] & 0xC0 == 0  # LBPME=0, LBPRZ=0


@given(st.integers(0, 0xFFFF), st.sampled_from([0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]), st.integers(0, 600))
def test_vpd_truncation_and_padding(alloc: int, page: int, buf: int) -> None:
    d = ScsiDisk(MemoryMedium(8), Identity(serial="abc", port_wwpn=WWPN))
    full = vpd(d, page)
    got = good(d, cdb.inquiry(alloc, evpd=True, page=page), buf)
    k = min(alloc, len(full), buf)
    assert got[:k] == full[:k] and got[k:] == bytes(buf - k)
