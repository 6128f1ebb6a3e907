"""The AES-GCM / GMAC transform of ESP-protected FC frames, as pure functions.

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

edifd.fc owns the frame layout (DF_CTL, the ESP_Header, `Frame.with_esp`/`split_esp`/`without_esp`);
this module owns what is inside the ESP body: the IV, the AAD, the ciphertext and the ICV.
`protect`/`unprotect` work on `Frame`s (the general path); `sealer`/`open_in_place` do the
same to a frame inside a wire buffer (the bulk FCP_DATA path, edifd/fc/burst.py), where the AAD is
the buffer's own header bytes (CS_CTL is 0 there: the callers make sure).
"""

from __future__ import annotations

import struct

from edifd.fc import ESP_HEADER_LEN, DfCtl, EspHeader, FcType, Frame, FrameHeader
from edifd.fc.burst import Sealer
from edifd.fc.frame import FC_HEADER_LEN

from . import sa as _sa
from .sa import SecurityAssociation

ESP_IV_LEN = 8
ESP_ICV_LEN = 16
ESP_OVERHEAD = ESP_HEADER_LEN + ESP_IV_LEN + ESP_ICV_LEN  # 32: a 2048-byte FCP_DATA frame becomes 2080

# Plain ints for the per-frame paths (enum operators cost microseconds on 3.11).
_FCP = int(FcType.FCP)
_DF_ESP = int(DfCtl.ESP)
_REST = ESP_HEADER_LEN + ESP_IV_LEN  # where the ciphertext starts in the data field
_IV = struct.Struct(">Q")  # the explicit IV: the sequence number, zero-extended
_ESP_IV = struct.Struct(">IIQ")  # SPI, sequence number, IV: the first 16 bytes of the data field
_AAD_LEN = FC_HEADER_LEN + ESP_HEADER_LEN  # GCM: header' ‖ SPI ‖ seq


def is_protected_traffic(header: FrameHeader) -> bool:
    """Which frames get an ESP_Header (our traffic selector, docs/edif.md §2): TYPE 0x08 (FCP) with
    R_CTL 0x00-0x0F (device data: CMND, XFER_RDY, DATA, RSP, CONF). ELS and BLS stay clear."""
    return header.type == _FCP and header.r_ctl <= 0x0F


def iv_for(seq: int) -> bytes:
    return _IV.pack(seq)


def aad_header(header: FrameHeader) -> bytes:
    """The 24 header bytes as they enter the AAD: DF_CTL with the ESP bit, CS_CTL zeroed."""
    raw = bytearray(header.pack())
    raw[4] = 0  # CS_CTL / Priority: mutable in fabrics
    raw[13] |= _DF_ESP
    return bytes(raw)


def protect(sa: SecurityAssociation, frame: Frame, seq: int) -> Frame:
    """The protected form of a clear frame under TX SA `sa` with sequence number `seq`."""
    esp = EspHeader(sa.spi, seq)
    iv = _IV.pack(seq)
    aad = aad_header(frame.header) + esp.pack()
    clear = frame.payload
    if sa.gmac:
        body = iv + clear + sa.seal(iv, b"", aad + iv + clear)
    else:
        body = iv + sa.seal(iv, clear, aad)
    return frame.with_esp(esp, body)


def split(frame: Frame) -> tuple[EspHeader, bytes, bytes] | None:
    """(ESP_Header, iv, rest) of a frame whose DF_CTL says ESP, or None if it is too short for IV +
    ICV. Sliced straight from the data field: this runs once per received frame."""
    data = frame.payload
    if len(data) < ESP_OVERHEAD:
        return None
    return EspHeader.unpack(data), data[ESP_HEADER_LEN:_REST], data[_REST:]


def unprotect(sa: SecurityAssociation, frame: Frame, esp: EspHeader, iv: bytes, rest: bytes) -> bytes:
    """Verify and return the clear data field; raises cryptography's InvalidTag on a bad ICV.
    The clear frame is then `frame.without_esp(clear)`."""
    aad = aad_header(frame.header) + frame.payload[:ESP_HEADER_LEN]  # the ESP_Header as received
    if sa.gmac:
        clear = rest[:-ESP_ICV_LEN]
        sa.open(iv, rest[-ESP_ICV_LEN:], aad + iv + clear)
        return clear
    return sa.open(iv, rest, aad)


def sealer(sa: SecurityAssociation, first_seq: int) -> Sealer:
    """The ESP body writer for `DataSequence.encode`: frame `i` of the sequence gets sequence number
    `first_seq + i` under TX SA `sa`. Called with the frame's 24-byte header at `fc` in `buf` (DF_CTL
    0x40 and CS_CTL 0 already written), it writes SPI ‖ seq ‖ IV, then the ciphertext and ICV of
    `clear` (GMAC: `clear` and its ICV). One closure per sequence, the AEAD call inlined."""
    aead, salt = sa.aead_and_salt()
    spi, pack_esp, pack_iv = sa.spi, _ESP_IV.pack_into, _IV.pack
    into = _sa.HAS_AEAD_INTO
    enc_into = aead.encrypt_into if into else None
    encrypt = aead.encrypt
    esp_at, body_at = FC_HEADER_LEN, FC_HEADER_LEN + _REST

    def seal_gcm(buf: bytearray, mv: memoryview, fc: int, i: int, clear: memoryview) -> None:
        seq = first_seq + i
        pack_esp(buf, fc + esp_at, spi, seq, seq)
        body = fc + body_at
        end = body + len(clear) + ESP_ICV_LEN
        if enc_into is not None:
            enc_into(salt + pack_iv(seq), clear, mv[fc : fc + _AAD_LEN], mv[body:end])
        else:  # cryptography 38: bytes in, bytes out
            mv[body:end] = encrypt(bytes(salt) + pack_iv(seq), bytes(clear), bytes(mv[fc : fc + _AAD_LEN]))

    def seal_gmac(buf: bytearray, mv: memoryview, fc: int, i: int, clear: memoryview) -> None:
        seq = first_seq + i
        pack_esp(buf, fc + esp_at, spi, seq, seq)
        body = fc + body_at
        n = len(clear)
        mv[body : body + n] = clear
        if enc_into is not None:
            enc_into(salt + pack_iv(seq), b"", mv[fc : body + n], mv[body + n : body + n + ESP_ICV_LEN])
        else:
            tag = encrypt(bytes(salt) + pack_iv(seq), b"", bytes(mv[fc : body + n]))
            mv[body + n : body + n + ESP_ICV_LEN] = tag

    return seal_gmac if sa.gmac else seal_gcm


def open_in_place(sa: SecurityAssociation, mv: memoryview, fc: int, dflen: int,
                  scratch: memoryview) -> bytes | memoryview:
    """Verify the protected frame at `fc` (header, then a `dflen`-byte data field without fill; its
    CS_CTL is 0) and return its clear data field: in `scratch` (GCM, where cryptography can write
    into it), a view of `mv` (GMAC) or new bytes. Raises InvalidTag; nothing is valid after that."""
    aead, salt = sa.aead_and_salt()
    n = dflen - ESP_OVERHEAD
    body = fc + FC_HEADER_LEN + _REST
    nonce = salt + mv[body - ESP_IV_LEN : body]
    into = _sa.HAS_AEAD_INTO
    if sa.gmac:
        aad, tag = mv[fc : body + n], mv[body + n : body + n + ESP_ICV_LEN]
        if into:
            aead.decrypt_into(nonce, tag, aad, scratch[:0])
        else:
            aead.decrypt(bytes(nonce), bytes(tag), bytes(aad))
        return mv[body : body + n]
    if into:
        out = scratch[:n]
        aead.decrypt_into(nonce, mv[body : body + n + ESP_ICV_LEN], mv[fc : fc + _AAD_LEN], out)
        return out
    return aead.decrypt(bytes(nonce), bytes(mv[body : body + n + ESP_ICV_LEN]), bytes(mv[fc : fc + _AAD_LEN]))
