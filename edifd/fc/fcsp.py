"""FC-SP-2 wire pieces: the AUTH_ELS header (ELS 0x90) and the ESP_Header optional header.

Only the framing lives here; what AUTH_ELS carries (IKEv2) and the AES-GCM transform of
ESP-protected frames belong to the IKE and SA layers. See docs/fc-wire.md for the choices
that FC-SP-2's (paid) text could not confirm.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._codec import check_bytes, check_uint, enum_or_int, unpack_from
from .errors import PayloadError

AUTH_ELS_CODE = 0x90  # the ELS command code; `ElsCode.AUTH_ELS` is this value
AUTH_ELS_HEADER_LEN = 12
AUTH_PROTOCOL_VERSION = 0x01
ESP_HEADER_LEN = 8

_AUTH_HDR = ">BBBBII"  # code, flags, message code, version, message length, T_ID
_ESP_HDR = struct.Struct(">II")  # SPI, sequence number
_U32 = 0xFFFFFFFF


class AuthMsgCode(enum.IntEnum):
    """AUTH_ELS message codes (Brocade fc_sp.h, Wireshark packet-fcsp.c)."""

    AUTH_REJECT = 0x0A
    AUTH_NEGOTIATE = 0x0B
    AUTH_DONE = 0x0C
    DHCHAP_CHALLENGE = 0x10
    DHCHAP_REPLY = 0x11
    DHCHAP_SUCCESS = 0x12
    FCAP_REQUEST = 0x13
    FCAP_ACKNOWLEDGE = 0x14
    FCAP_CONFIRM = 0x15
    FCPAP_INIT = 0x16
    FCPAP_ACCEPT = 0x17
    FCPAP_COMPLETE = 0x18
    IKE_SA_INIT = 0x22
    IKE_AUTH = 0x23
    IKE_CREATE_CHILD_SA = 0x24
    IKE_INFORMATIONAL = 0x25


class AuthFlags(enum.IntFlag):
    NONE = 0x00
    SEQ_TOGGLE = 0x01  # Brocade's sequence-number toggle
    CONCATENATION = 0x40
    MORE_FRAGMENTS = 0x80


class AuthProtocolId(enum.IntEnum):
    DHCHAP = 1
    FCAP = 2
    FCPAP = 3
    IKEV2 = 4
    IKEV2_AUTH = 5


@dataclass(frozen=True)
class AuthEls:
    """One AUTH_ELS request payload: the 12-byte header and the message that follows it.

    The header's message length counts only the bytes after the header (lpfc's semantics),
    so it is derived from `message` and never stored separately.
    """

    message_code: AuthMsgCode | int
    tid: int
    message: bytes = b""
    flags: AuthFlags | int = AuthFlags.NONE
    version: int = AUTH_PROTOCOL_VERSION

    CODE = AUTH_ELS_CODE

    def __post_init__(self) -> None:
        check_uint("message_code", int(self.message_code), 8, PayloadError)
        check_uint("tid", self.tid, 32, PayloadError)
        check_uint("flags", int(self.flags), 8, PayloadError)
        check_uint("version", self.version, 8, PayloadError)
        object.__setattr__(self, "message", check_bytes("message", self.message, PayloadError))

    def pack(self) -> bytes:
        head = struct.pack(
            _AUTH_HDR,
            AUTH_ELS_CODE,
            int(self.flags),
            int(self.message_code),
            self.version,
            len(self.message),
            self.tid,
        )
        return head + self.message

    @classmethod
    def unpack(cls, data: bytes) -> AuthEls:
        code, flags, msg_code, version, length, tid = unpack_from(
            _AUTH_HDR, data, what="AUTH_ELS header", exc=PayloadError
        )
        if code != AUTH_ELS_CODE:
            raise PayloadError(f"AUTH_ELS: command code 0x{code:02x} is not 0x90")
        if version != AUTH_PROTOCOL_VERSION:
            raise PayloadError(f"AUTH_ELS: unsupported protocol version {version}")
        if length != len(data) - AUTH_ELS_HEADER_LEN:
            raise PayloadError(
                f"AUTH_ELS: message length {length} != {len(data) - AUTH_ELS_HEADER_LEN} bytes present"
            )
        return cls(
            message_code=enum_or_int(AuthMsgCode, msg_code),
            tid=tid,
            message=bytes(data[AUTH_ELS_HEADER_LEN:]),
            flags=AuthFlags(flags),
            version=version,
        )


@dataclass(frozen=True)
class EspHeader:
    """The 8-byte FC-SP ESP_Header (DF_CTL 0x40), first of the optional headers.

    SPI 0 and 1-255 are reserved by RFC 4303; whether to accept them is the SA layer's call,
    so the codec carries any 32-bit value.
    """

    spi: int
    seq: int

    def __post_init__(self) -> None:
        # One of these is built per protected frame: test the common case inline (check_uint's
        # isinstance calls cost a microsecond), and let check_uint word the error.
        spi, seq = self.spi, self.seq
        if not (type(spi) is int and type(seq) is int and 0 <= spi <= _U32 and 0 <= seq <= _U32):
            check_uint("spi", spi, 32, PayloadError)
            check_uint("seq", seq, 32, PayloadError)

    def pack(self) -> bytes:
        return _ESP_HDR.pack(self.spi, self.seq)

    @classmethod
    def unpack(cls, data: bytes) -> EspHeader:
        if len(data) < ESP_HEADER_LEN:
            raise PayloadError(f"ESP_Header: need {ESP_HEADER_LEN} bytes, have {len(data)}")
        spi, seq = _ESP_HDR.unpack_from(data)
        # Two unsigned 32-bit fields are valid by construction: skip __post_init__ (once per frame).
        esp = object.__new__(cls)
        object.__setattr__(esp, "spi", spi)
        object.__setattr__(esp, "seq", seq)
        return esp
