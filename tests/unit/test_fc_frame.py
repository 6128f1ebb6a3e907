"""FC-2 frame model: header layout, CRC, fill handling, delimiters, ESP_Header slot."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.fc import (
    DfCtl,
    Eof,
    ErrorReason,
    EspHeader,
    FcError,
    FCtl,
    FcType,
    Frame,
    FrameError,
    FrameHeader,
    PayloadError,
    RCtl,
    Sof,
    fc_crc,
    fill_for,
)
from edifd.fc.frame import crc_bytes, optional_headers_len

FLOGI_HDR = FrameHeader(r_ctl=RCtl.ELS_REQ, d_id=0xFFFFFE, s_id=0, type=FcType.ELS, f_ctl=0x290000, ox_id=1)


def test_header_layout_is_byte_exact() -> None:
    # struct fc_frame_header of include/scsi/fc/fc_fs.h:
    # R_CTL|D_ID, CS_CTL|S_ID, TYPE|F_CTL, SEQ_ID, DF_CTL, SEQ_CNT, OX_ID, RX_ID, Parameter
    h = FrameHeader(
        r_ctl=0x01, d_id=0x010101, cs_ctl=0x5A, s_id=0x010102, type=0x08, f_ctl=0x880008,
        seq_id=0x07, df_ctl=0x00, seq_cnt=0x0102, ox_id=0x1234, rx_id=0x5678, parameter=0x00000800,
    )
    assert h.pack() == bytes.fromhex("01010101" "5a010102" "08880008" "07000102" "12345678" "00000800")
    assert FrameHeader.unpack(h.pack()) == h
    assert h.relative_offset == 0x800


def test_default_ids_are_unassigned() -> None:
    assert FLOGI_HDR.pack() == bytes.fromhex("22fffffe 00000000 01290000 00000000 0001ffff 00000000")


def test_crc_known_vector_and_little_endian() -> None:
    # CRC-32 check value of "123456789" (the Ethernet CRC), written little-endian like an FCS.
    assert fc_crc(b"123456789") == 0xCBF43926
    assert crc_bytes(b"123456789") == bytes.fromhex("2639f4cb")


def test_frame_crc_covers_header_and_data_field() -> None:
    f = Frame(FLOGI_HDR, b"\x04\x00\x00\x00")
    body = bytes.fromhex("22fffffe 00000000 01290000 00000000 0001ffff 00000000") + b"\x04\x00\x00\x00"
    assert f.pack_fc() == body
    assert f.pack_with_crc() == body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")


@pytest.mark.parametrize(("length", "fill"), [(0, 0), (1, 3), (2, 2), (3, 1), (4, 0), (2047, 1)])
def test_fill_bits_follow_payload_length(length: int, fill: int) -> None:
    f = Frame(FLOGI_HDR.replace(f_ctl=0x290003), (b"a" * length))
    assert fill_for(length) == fill
    assert f.header.f_ctl == 0x290000 | fill
    assert len(f.data_field) % 4 == 0 and f.data_field.endswith(bytes(fill))
    back = Frame.unpack_fc(f.pack_with_crc(), Sof.I3, Eof.T)
    assert back == f and back.payload == b"a" * length


def test_delimiter_codes_and_ordered_sets() -> None:
    # codes of include/scsi/fc/fc_encaps.h; ordered sets as Wireshark's packet-fc.c
    assert (Sof.I3, Sof.N3, Eof.N, Eof.T) == (0x2E, 0x36, 0x41, 0x42)
    assert Sof.I3.ordered_set == 0xBCB55656 and Sof.N3.ordered_set == 0xBCB53636
    assert Eof.T.ordered_set == 0xBC957575 and Eof.N.ordered_set == 0xBC95D5D5
    assert Sof.I3.initiates_sequence and not Sof.N3.initiates_sequence
    with pytest.raises(FrameError):
        _ = Eof.RT.ordered_set


def test_oversized_payload_rejected() -> None:
    Frame(FLOGI_HDR, bytes(2112))
    Frame(FLOGI_HDR, bytes(2109))  # padded to 2112: allowed
    with pytest.raises(FrameError) as e:
        Frame(FLOGI_HDR, bytes(2113))
    assert e.value.reason is ErrorReason.FRAME_TOO_LONG


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("r_ctl", 256), ("d_id", 1 << 24), ("s_id", -1), ("f_ctl", 1 << 24), ("ox_id", 1 << 16),
        ("parameter", 1 << 32), ("type", True),
    ],
)
def test_header_field_ranges(field: str, value: int) -> None:
    with pytest.raises(FrameError):
        FLOGI_HDR.replace(**{field: value})


def test_reserved_df_ctl_bits_rejected() -> None:
    for bad in (0x80, 0x04, 0x08):
        with pytest.raises(FrameError):
            Frame(FLOGI_HDR.replace(df_ctl=bad), bytes(64))


def test_optional_header_sizes() -> None:
    assert optional_headers_len(DfCtl.ESP) == 8
    assert optional_headers_len(DfCtl.ESP | DfCtl.NETWORK | 0x01) == 8 + 16 + 16
    assert optional_headers_len(DfCtl.ASSOCIATION | 0x03) == 32 + 64
    with pytest.raises(FrameError):
        Frame(FLOGI_HDR.replace(df_ctl=DfCtl.NETWORK), bytes(12))
    f = Frame(FLOGI_HDR.replace(df_ctl=DfCtl.NETWORK), bytes(16) + b"abcd")
    assert f.fc4_payload == b"abcd"


def test_esp_slot_right_after_header() -> None:
    plain = Frame(
        FrameHeader(r_ctl=RCtl.FCP_DATA, d_id=1, s_id=2, type=FcType.FCP, f_ctl=0x880008, parameter=4096),
        b"plaintext data",
    )
    assert plain.esp is None and plain.esp_body == plain.payload
    body = b"I" * 8 + b"C" * 14 + b"T" * 16  # IV || ciphertext || ICV, as the ESP stage would produce
    prot = plain.with_esp(EspHeader(spi=0x1000, seq=1), body)
    assert prot.header.df_ctl == 0x40
    assert prot.header.parameter == 4096 and prot.header.r_ctl == RCtl.FCP_DATA
    wire = prot.pack_fc()
    assert wire[13] == 0x40
    assert wire[24:32] == bytes.fromhex("00001000 00000001")  # SPI || Seq at offset 24 (docs/edif.md §1)
    assert wire[32 : 32 + len(body)] == body
    assert prot.header.f_ctl & FCtl.FILL_MASK == fill_for(8 + len(body))
    esp, rest = prot.split_esp()
    assert esp == EspHeader(0x1000, 1) and rest == body
    with pytest.raises(PayloadError):
        _ = prot.fc4_payload
    back = prot.without_esp(b"plaintext data")
    assert back == plain
    with pytest.raises(FrameError):
        plain.split_esp()


def test_esp_header_codec() -> None:
    assert EspHeader(0x01020304, 0xA0B0C0D0).pack() == bytes.fromhex("01020304a0b0c0d0")
    assert EspHeader.unpack(bytes.fromhex("01020304a0b0c0d0")) == EspHeader(0x01020304, 0xA0B0C0D0)
    with pytest.raises(PayloadError):
        EspHeader.unpack(b"\x00" * 7)
    with pytest.raises(PayloadError):
        EspHeader(1 << 32, 0)


def test_unpack_fc_rejects_bad_crc_short_and_fill() -> None:
    good = Frame(FLOGI_HDR, b"\x04\x00\x00\x00").pack_with_crc()
    bad = bytearray(good)
    bad[25] ^= 1
    with pytest.raises(FrameError) as e:
        Frame.unpack_fc(bytes(bad), Sof.I3, Eof.T)
    assert e.value.reason is ErrorReason.BAD_CRC
    with pytest.raises(FrameError) as e:
        Frame.unpack_fc(good[:24], Sof.I3, Eof.T)
    assert e.value.reason is ErrorReason.FRAME_TOO_SHORT
    # fill bits claiming 3 bytes of a 0-byte data field
    hdr = FLOGI_HDR.replace(f_ctl=0x290003).pack()
    with pytest.raises(FrameError):
        Frame.unpack_fc(hdr + crc_bytes(hdr), Sof.I3, Eof.T)
    # non-zero fill bytes
    body = FLOGI_HDR.replace(f_ctl=0x290001).pack() + b"abcd"
    with pytest.raises(FrameError):
        Frame.unpack_fc(body + crc_bytes(body), Sof.I3, Eof.T)


@given(st.binary(max_size=200))
def test_unpack_fc_raises_only_fc_error(data: bytes) -> None:
    try:
        Frame.unpack_fc(data, Sof.I3, Eof.T, check_crc=False)
    except FcError:
        pass


def test_esp_aad_header_is_known_before_encryption() -> None:
    # The ESP stage needs the protected header (fill bits included) as AAD before it has the
    # ciphertext; a placeholder body of the final length gives exactly the header sent.
    plain = Frame(FrameHeader(r_ctl=RCtl.FCP_DATA, d_id=1, s_id=2, type=FcType.FCP, f_ctl=0x880008), b"abcde")
    esp = EspHeader(0x100, 7)
    placeholder = plain.with_esp(esp, bytes(8 + len(plain.payload) + 16))
    sent = plain.with_esp(esp, b"I" * 8 + b"CCCCC" + b"T" * 16)
    assert placeholder.header == sent.header and sent.header.fill == 3
