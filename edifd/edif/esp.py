"""The ESP_Header frame layout and its AES-GCM / GMAC transform, as pure functions.

On the wire (offsets from the start of the FC header; docs/edif.md has the full table):

    0  24  FC header, DF_CTL |= 0x40, everything else as in the clear frame        AAD
   24   4  SPI                                                                       AAD
   28   4  sequence number                                                           AAD
   32   8  IV = 0x00000000 ‖ sequence number (big-endian 64-bit)                     nonce = salt ‖ IV
   40   n  clear data field: optional headers + FC-4 payload (GCM: encrypted; GMAC: clear)
 40+n  16  ICV (GCM tag)
 (fill) 0-3 zero fill to a word boundary, outside the ICV: F_CTL's fill count is in the AAD

AAD = FC header with CS_CTL/Priority zeroed ‖ SPI ‖ seq (GMAC, RFC 4543: ‖ IV ‖ payload, and an
empty plaintext). CS_CTL is zeroed because fabrics may rewrite it (priority/QoS, like the IPv4 TOS
byte that ESP does not cover). No RFC 4303 pad/next-header trailer: FC TYPE names the upper layer
and GCM needs no padding. The layout is FC-SP-2-shaped, unverified against the (paid) FC-SP-2 text.
"""

from __future__ import annotations

import struct

from edifd.fc import Frame, FrameHeader

from .sa import SecurityAssociation

ESP_HEADER_LEN = 8
ESP_IV_LEN = 8
ESP_ICV_LEN = 16
ESP_OVERHEAD = ESP_HEADER_LEN + ESP_IV_LEN + ESP_ICV_LEN  # 32: a 2048-byte FCP_DATA frame becomes 2080

FCP_TYPE = 0x08
DF_CTL_ESP = 0x40
_ESP = struct.Struct(">II")  # SPI, sequence number
_IV = struct.Struct(">Q")  # the explicit IV: the sequence number, zero-extended


def is_protected_traffic(header: FrameHeader) -> bool:
    """Which frames get an ESP_Header (our traffic selector, fc-wire §5.4): TYPE 0x08 (FCP) with
    R_CTL 0x00-0x0F (device data: CMND, XFER_RDY, DATA, RSP, CONF). ELS and BLS stay clear."""
    return header.type == FCP_TYPE and header.r_ctl <= 0x0F


def with_df_ctl(header: FrameHeader, df_ctl: int) -> FrameHeader:
    """`header` with another DF_CTL. FrameHeader.replace() re-validates all twelve fields (about
    5 us, a quarter of a frame's ESP cost); the other fields are already valid, so copy them."""
    if not hasattr(header, "__dict__"):  # a future slotted FrameHeader: take the checked path
        return header.replace(df_ctl=df_ctl)
    new = object.__new__(FrameHeader)
    new.__dict__.update(header.__dict__)
    object.__setattr__(new, "df_ctl", df_ctl & 0xFF)
    return new


def iv_for(seq: int) -> bytes:
    return _IV.pack(seq)


def aad_header(header: FrameHeader) -> bytes:
    """The 24 header bytes as they enter the AAD: DF_CTL with the ESP bit, CS_CTL zeroed."""
    raw = bytearray(header.pack())
    raw[4] = 0  # CS_CTL / Priority: mutable in fabrics
    raw[13] |= DF_CTL_ESP
    return bytes(raw)


def protect(sa: SecurityAssociation, frame: Frame, seq: int) -> Frame:
    """The protected form of a clear frame under TX SA `sa` with sequence number `seq`."""
    esp = _ESP.pack(sa.spi, seq)
    iv = _IV.pack(seq)
    aad = aad_header(frame.header) + esp
    clear = frame.payload
    if sa.gmac:
        body = iv + clear + sa.seal(iv, b"", aad + iv + clear)
    else:
        body = iv + sa.seal(iv, clear, aad)
    return Frame(with_df_ctl(frame.header, frame.header.df_ctl | DF_CTL_ESP), esp + body,
                 frame.sof, frame.eof)


def split(frame: Frame) -> tuple[int, int, bytes, bytes] | None:
    """(spi, seq, iv, rest) of a protected frame, or None if it is too short for IV + ICV."""
    data = frame.payload
    if len(data) < ESP_OVERHEAD:
        return None
    spi, seq = _ESP.unpack_from(data)
    return spi, seq, data[ESP_HEADER_LEN : ESP_HEADER_LEN + ESP_IV_LEN], data[ESP_HEADER_LEN + ESP_IV_LEN :]


def unprotect(sa: SecurityAssociation, frame: Frame, iv: bytes, rest: bytes) -> bytes:
    """Verify and return the clear data field; raises cryptography's InvalidTag on a bad ICV.
    The clear frame is then `Frame(with_df_ctl(h, h.df_ctl & ~0x40), clear, sof, eof)`."""
    aad = aad_header(frame.header) + frame.payload[:ESP_HEADER_LEN]
    if sa.gmac:
        clear = rest[:-ESP_ICV_LEN]
        sa.open(iv, rest[-ESP_ICV_LEN:], aad + iv + clear)
        return clear
    return sa.open(iv, rest, aad)
