"""Extended Link Service payloads (FC-LS): FLOGI, PLOGI, PRLI/PRLO (FCP page), LOGO, LS_ACC,
LS_RJT, RSCN, and AUTH_ELS (in `fcsp`). Layouts follow Linux fc_els.h and Wireshark packet-fcels.c;
the login service parameters and PRLI/PRLO pages are in `service_params`.

Reserved bytes are sent as zero and ignored on receipt. Lengths are checked exactly: a payload
with bytes missing or left over is rejected with `PayloadError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ._codec import RejectCodes, check_bytes, check_uint, unpack_from
from .errors import PayloadError
from .fcsp import AUTH_ELS_CODE, AuthEls
from .frame import FC_MAX_DATA_FIELD
from .service_params import CommonFeatures, LoginPayload, PagedPayload


class ElsCode(enum.IntEnum):
    LS_RJT = 0x01
    LS_ACC = 0x02
    PLOGI = 0x03
    FLOGI = 0x04
    LOGO = 0x05
    RRQ = 0x12
    REC = 0x13
    PRLI = 0x20
    PRLO = 0x21
    ADISC = 0x52
    RSCN = 0x61
    SCR = 0x62
    RNID = 0x78
    AUTH_ELS = AUTH_ELS_CODE


# --- FLOGI, PLOGI, PRLI, PRLO and their LS_ACC (the layouts are in service_params) ------------


@dataclass(frozen=True, kw_only=True)
class Flogi(LoginPayload):
    CODE: ClassVar[int] = ElsCode.FLOGI


@dataclass(frozen=True, kw_only=True)
class Plogi(LoginPayload):
    CODE: ClassVar[int] = ElsCode.PLOGI
    common_features: CommonFeatures | int = CommonFeatures.CIRO


@dataclass(frozen=True, kw_only=True)
class LoginAcc(LoginPayload):
    """LS_ACC to FLOGI or PLOGI: the responder's own service parameters."""

    CODE: ClassVar[int] = ElsCode.LS_ACC


@dataclass(frozen=True)
class Prli(PagedPayload):
    CODE: ClassVar[int] = ElsCode.PRLI


@dataclass(frozen=True)
class PrliAcc(PagedPayload):
    CODE: ClassVar[int] = ElsCode.LS_ACC


@dataclass(frozen=True)
class Prlo(PagedPayload):
    CODE: ClassVar[int] = ElsCode.PRLO


@dataclass(frozen=True)
class PrloAcc(PagedPayload):
    CODE: ClassVar[int] = ElsCode.LS_ACC


# --- LOGO, LS_ACC, LS_RJT, RSCN, others -------------------------------------------------------


@dataclass(frozen=True)
class Logo:
    """LOGO (16 bytes): the N_Port_ID and Port_Name of the port logging out."""

    CODE: ClassVar[int] = ElsCode.LOGO

    n_port_id: int
    wwpn: int

    def __post_init__(self) -> None:
        check_uint("n_port_id", self.n_port_id, 24, PayloadError)
        check_uint("wwpn", self.wwpn, 64, PayloadError)

    def pack(self) -> bytes:
        return struct.pack(">B3xIQ", self.CODE, self.n_port_id, self.wwpn)

    @classmethod
    def unpack(cls, data: bytes) -> Logo:
        if len(data) != 16:
            raise PayloadError(f"LOGO must be 16 bytes, got {len(data)}")
        code, port_word, wwpn = unpack_from(">B3xIQ", data, what="LOGO", exc=PayloadError)
        if code != cls.CODE:
            raise PayloadError("not a LOGO")
        return cls(port_word & 0xFFFFFF, wwpn)


@dataclass(frozen=True)
class LsAcc:
    """A generic LS_ACC: `02 00 00 00` and command-specific bytes (empty for LOGO, RSCN, AUTH_ELS)."""

    CODE: ClassVar[int] = ElsCode.LS_ACC

    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", check_bytes("body", self.body, PayloadError))
        if 4 + len(self.body) > FC_MAX_DATA_FIELD:
            raise PayloadError("LS_ACC body too long")

    def pack(self) -> bytes:
        return bytes((self.CODE, 0, 0, 0)) + self.body

    @classmethod
    def unpack(cls, data: bytes) -> LsAcc:
        if len(data) < 4 or data[0] != cls.CODE:
            raise PayloadError("not an LS_ACC")
        return cls(bytes(data[4:]))


class LsRjtReason(enum.IntEnum):
    INVALID_COMMAND = 0x01
    LOGICAL_ERROR = 0x03
    LOGICAL_BUSY = 0x05
    PROTOCOL_ERROR = 0x07
    UNABLE = 0x09
    NOT_SUPPORTED = 0x0B
    IN_PROGRESS = 0x0E
    VENDOR = 0xFF


class LsRjtExplanation(enum.IntEnum):
    NONE = 0x00
    SERVICE_OPTIONS = 0x01
    INITIATOR_CTL = 0x03
    RECIPIENT_CTL = 0x05
    RECEIVE_SIZE = 0x07
    CONCURRENT_SEQ = 0x09
    CREDIT = 0x0B
    INVALID_PORT_NAME = 0x0D
    INVALID_NODE_NAME = 0x0E
    INVALID_CSP = 0x0F
    INVALID_ASSOC_HEADER = 0x11
    ASSOC_HEADER_REQUIRED = 0x13
    INVALID_S_ID = 0x15
    INVALID_OX_RX_ID = 0x17
    REQUEST_IN_PROGRESS = 0x19
    PLOGI_REQUIRED = 0x1E
    INSUFFICIENT_RESOURCES = 0x29
    UNABLE_TO_SUPPLY_DATA = 0x2A
    REQUEST_NOT_SUPPORTED = 0x2C
    INVALID_PAYLOAD_LENGTH = 0x2D
    AUTHENTICATION_REQUIRED = 0x48  # Wireshark's name; used to refuse PRLI before authentication


@dataclass(frozen=True)
class LsRjt(RejectCodes):
    """LS_RJT (8 bytes): `01 00 00 00`, reserved, reason, explanation, vendor unique."""

    CODE: ClassVar[int] = ElsCode.LS_RJT
    REASONS = LsRjtReason
    EXPLANATIONS = LsRjtExplanation

    reason: LsRjtReason | int
    explanation: LsRjtExplanation | int = LsRjtExplanation.NONE

    def pack(self) -> bytes:
        return struct.pack(">B3xxBBB", self.CODE, *self.codes())

    @classmethod
    def unpack(cls, data: bytes) -> LsRjt:
        if len(data) != 8:
            raise PayloadError(f"LS_RJT must be 8 bytes, got {len(data)}")
        code, reason, expl, vendor = unpack_from(">B3xxBBB", data, what="LS_RJT", exc=PayloadError)
        if code != cls.CODE:
            raise PayloadError("not an LS_RJT")
        return cls.from_codes(reason, expl, vendor)


class RscnAddressFormat(enum.IntEnum):
    PORT = 0
    AREA = 1
    DOMAIN = 2
    FABRIC = 3


@dataclass(frozen=True)
class RscnPage:
    port_id: int
    address_format: RscnAddressFormat | int = RscnAddressFormat.PORT
    event_qualifier: int = 0

    def __post_init__(self) -> None:
        check_uint("port_id", self.port_id, 24, PayloadError)
        check_uint("address_format", int(self.address_format), 2, PayloadError)
        check_uint("event_qualifier", self.event_qualifier, 4, PayloadError)

    def pack(self) -> bytes:
        return struct.pack(">I", (self.event_qualifier << 2 | int(self.address_format)) << 24 | self.port_id)


@dataclass(frozen=True)
class Rscn:
    """RSCN: `61 04 LLLL` and 4-byte affected-address pages."""

    CODE: ClassVar[int] = ElsCode.RSCN

    pages: tuple[RscnPage, ...]

    def __post_init__(self) -> None:
        pages = tuple(self.pages)
        if not all(isinstance(p, RscnPage) for p in pages):
            raise PayloadError("pages must be RscnPage")
        if 4 + 4 * len(pages) > FC_MAX_DATA_FIELD:
            raise PayloadError("too many RSCN pages")
        object.__setattr__(self, "pages", pages)

    def pack(self) -> bytes:
        head = struct.pack(">BBH", self.CODE, 4, 4 + 4 * len(self.pages))
        return head + b"".join(p.pack() for p in self.pages)

    @classmethod
    def unpack(cls, data: bytes) -> Rscn:
        code, page_len, length = unpack_from(">BBH", data, what="RSCN header", exc=PayloadError)
        if code != cls.CODE or page_len != 4:
            raise PayloadError("not an RSCN with 4-byte pages")
        if length != len(data) or length % 4:
            raise PayloadError(f"RSCN payload length {length} does not match {len(data)} bytes")
        pages = []
        for off in range(4, length, 4):
            (word,) = unpack_from(">I", data, off, what="RSCN page", exc=PayloadError)
            top = word >> 24
            pages.append(RscnPage(word & 0xFFFFFF, RscnAddressFormat(top & 3), (top >> 2) & 0xF))
        return cls(tuple(pages))


@dataclass(frozen=True)
class RawEls:
    """An ELS this model does not decode (RRQ, ADISC, ...): its code and the rest of the payload.

    Receivers answer it with LS_RJT "command not supported".
    """

    code: int
    body: bytes = b""

    def __post_init__(self) -> None:
        check_uint("code", self.code, 8, PayloadError)
        object.__setattr__(self, "body", check_bytes("body", self.body, PayloadError))

    def pack(self) -> bytes:
        return bytes((self.code,)) + self.body


ElsPayload: TypeAlias = (
    Flogi | Plogi | LoginAcc | Prli | PrliAcc | Prlo | PrloAcc | Logo | LsAcc | LsRjt | Rscn
    | AuthEls | RawEls
)

_REQUESTS: dict[int, type] = {
    ElsCode.FLOGI: Flogi,
    ElsCode.PLOGI: Plogi,
    ElsCode.PRLI: Prli,
    ElsCode.PRLO: Prlo,
    ElsCode.LOGO: Logo,
    ElsCode.LS_RJT: LsRjt,
    ElsCode.RSCN: Rscn,
    ElsCode.AUTH_ELS: AuthEls,
}
_ACC_FOR: dict[int, type] = {
    ElsCode.FLOGI: LoginAcc,
    ElsCode.PLOGI: LoginAcc,
    ElsCode.PRLI: PrliAcc,
    ElsCode.PRLO: PrloAcc,
}


def parse_els(payload: bytes, *, reply_to: int | None = None) -> ElsPayload:
    """Decode an ELS payload. An LS_ACC is decoded by the request it answers (`reply_to`).

    Raises only `PayloadError`. Unknown command codes give `RawEls`.
    """
    payload = bytes(payload)
    if not payload:
        raise PayloadError("empty ELS payload")
    code = payload[0]
    if code == ElsCode.LS_ACC:
        cls = _ACC_FOR.get(reply_to, LsAcc) if reply_to is not None else LsAcc
        return cls.unpack(payload)  # type: ignore[attr-defined,no-any-return]
    cls = _REQUESTS.get(code)
    if cls is None:
        return RawEls(code, payload[1:])
    return cls.unpack(payload)  # type: ignore[attr-defined,no-any-return]
