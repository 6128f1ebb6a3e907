"""Extended Link Service payloads (FC-LS): FLOGI, PLOGI, PRLI/PRLO (FCP page), LOGO, LS_ACC,
LS_RJT, RSCN, and AUTH_ELS (in `fcsp`). Layouts follow Linux fc_els.h and Wireshark packet-fcels.c.

Reserved bytes are sent as zero and ignored on receipt. Lengths are checked exactly: a payload
with bytes missing or left over is rejected with `PayloadError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from ._codec import check_bytes, check_uint, enum_or_int, unpack_from
from .errors import PayloadError
from .fcsp import AUTH_ELS_CODE, AuthEls
from .frame import FC_MAX_DATA_FIELD, FcType


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


class CommonFeatures(enum.IntFlag):
    """Common service parameter features (16 bits at offset 8 of a login payload)."""

    NONE = 0
    CIRO = 0x8000  # PLOGI: continuously increasing relative offset; FLOGI: NPIV
    RRO = 0x4000
    VENDOR_VERSION_VALID = 0x2000
    F_PORT = 0x1000  # set by a fabric port in its FLOGI LS_ACC; clear means point-to-point
    ALT_BB_CREDIT = 0x0800
    E_D_TOV_RES = 0x0400
    MULTICAST = 0x0200
    BROADCAST = 0x0100
    SIMPLEX = 0x0040
    SECURITY = 0x0020  # FC-SP / EDIF: the port runs an authentication application
    CLOCK_SYNC = 0x0010
    R_T_TOV = 0x0008
    DHD = 0x0004
    SEQ_CNT = 0x0002
    PAYLOAD_LEN = 0x0001  # 0 = 116-byte payload


class ClassOptions(enum.IntFlag):
    NONE = 0
    VALID = 0x8000
    SEQUENTIAL_DELIVERY = 0x0800


_CLASS = ">HHHHHHxBxx"  # options, initiator ctl, recipient ctl, rx size, conc seq, e2e credit, -, open seq


@dataclass(frozen=True)
class ClassParams:
    """16-byte class service parameters (class 1, 2, 3 or 4 slot of a login payload)."""

    options: ClassOptions | int = ClassOptions.NONE
    initiator_ctl: int = 0
    recipient_ctl: int = 0
    rx_size: int = 0
    concurrent_seq: int = 0
    e2e_credit: int = 0
    open_seq_per_exchange: int = 0

    def __post_init__(self) -> None:
        for name in ("options", "initiator_ctl", "recipient_ctl", "rx_size", "concurrent_seq", "e2e_credit"):
            check_uint(name, int(getattr(self, name)), 16, PayloadError)
        check_uint("open_seq_per_exchange", self.open_seq_per_exchange, 8, PayloadError)

    @classmethod
    def class3(cls, rx_size: int = FC_MAX_DATA_FIELD) -> ClassParams:
        """Class 3 as libfc advertises it: valid, sequential delivery, 255 sequences, 1 open."""
        return cls(
            options=ClassOptions.VALID | ClassOptions.SEQUENTIAL_DELIVERY,
            rx_size=rx_size,
            concurrent_seq=255,
            open_seq_per_exchange=1,
        )

    @property
    def valid(self) -> bool:
        return bool(int(self.options) & ClassOptions.VALID)

    def pack(self) -> bytes:
        return struct.pack(
            _CLASS,
            int(self.options),
            self.initiator_ctl,
            self.recipient_ctl,
            self.rx_size,
            self.concurrent_seq,
            self.e2e_credit,
            self.open_seq_per_exchange,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> ClassParams:
        o, ic, rc, rx, cs, e2e, open_seq = unpack_from(
            _CLASS, data, offset, what="class params", exc=PayloadError
        )
        return cls(ClassOptions(o), ic, rc, rx, cs, e2e, open_seq)


LOGIN_LEN = 116
_LOGIN = ">B3xBBHHHHHIQQ"  # code, version hi/lo, BB_Credit, features, BB_SC_N|rx size, word 3, E_D_TOV, names


@dataclass(frozen=True, kw_only=True)
class _LoginPayload:
    """Common + class service parameters shared by FLOGI, PLOGI and their LS_ACC (116 bytes)."""

    CODE: ClassVar[int]

    wwpn: int
    wwnn: int
    common_features: CommonFeatures | int = CommonFeatures.NONE
    version_high: int = 0x20
    version_low: int = 0x20
    bb_credit: int = 10
    bb_sc_n: int = 0
    rx_size: int = FC_MAX_DATA_FIELD
    # Bytes 12-15: total concurrent sequences and relative offset by category in PLOGI;
    # in an FLOGI LS_ACC the same word is R_A_TOV (see `r_a_tov`).
    total_concurrent_seq: int = 255
    rel_offset_by_category: int = 0x001F
    e_d_tov: int = 2000
    class1: ClassParams = field(default_factory=ClassParams)
    class2: ClassParams = field(default_factory=ClassParams)
    class3: ClassParams = field(default_factory=ClassParams.class3)
    class4: ClassParams = field(default_factory=ClassParams)
    vendor_version: bytes = bytes(16)

    def __post_init__(self) -> None:
        check_uint("wwpn", self.wwpn, 64, PayloadError)
        check_uint("wwnn", self.wwnn, 64, PayloadError)
        check_uint("common_features", int(self.common_features), 16, PayloadError)
        for name, bits in (
            ("version_high", 8),
            ("version_low", 8),
            ("bb_credit", 16),
            ("bb_sc_n", 4),
            ("rx_size", 12),
            ("total_concurrent_seq", 16),
            ("rel_offset_by_category", 16),
            ("e_d_tov", 32),
        ):
            check_uint(name, getattr(self, name), bits, PayloadError)
        vv = check_bytes("vendor_version", self.vendor_version, PayloadError)
        if len(vv) != 16:
            raise PayloadError("vendor_version must be 16 bytes")
        object.__setattr__(self, "vendor_version", vv)
        if int(self.common_features) & CommonFeatures.PAYLOAD_LEN:
            raise PayloadError("only the 116-byte login payload is supported (features bit 0x0001)")

    @property
    def security(self) -> bool:
        """The FC-SP security bit (0x0020): the sender runs an authentication application."""
        return bool(int(self.common_features) & CommonFeatures.SECURITY)

    @property
    def r_a_tov(self) -> int:
        return self.total_concurrent_seq << 16 | self.rel_offset_by_category

    def pack(self) -> bytes:
        head = struct.pack(
            _LOGIN,
            self.CODE,
            self.version_high,
            self.version_low,
            self.bb_credit,
            int(self.common_features),
            self.bb_sc_n << 12 | self.rx_size,
            self.total_concurrent_seq,
            self.rel_offset_by_category,
            self.e_d_tov,
            self.wwpn,
            self.wwnn,
        )
        classes = b"".join(c.pack() for c in (self.class1, self.class2, self.class3, self.class4))
        return head + classes + self.vendor_version

    @classmethod
    def unpack(cls, data: bytes) -> _LoginPayload:
        if len(data) != LOGIN_LEN:
            raise PayloadError(f"login payload must be {LOGIN_LEN} bytes, got {len(data)}")
        code, vh, vl, bb, feat, sc_rx, w3a, w3b, edtov, wwpn, wwnn = unpack_from(
            _LOGIN, data, what="login payload", exc=PayloadError
        )
        if code != cls.CODE:
            raise PayloadError(f"login payload: code 0x{code:02x}, expected 0x{cls.CODE:02x}")
        return cls(
            wwpn=wwpn,
            wwnn=wwnn,
            common_features=CommonFeatures(feat),
            version_high=vh,
            version_low=vl,
            bb_credit=bb,
            bb_sc_n=sc_rx >> 12,
            rx_size=sc_rx & 0xFFF,
            total_concurrent_seq=w3a,
            rel_offset_by_category=w3b,
            e_d_tov=edtov,
            class1=ClassParams.unpack(data, 36),
            class2=ClassParams.unpack(data, 52),
            class3=ClassParams.unpack(data, 68),
            class4=ClassParams.unpack(data, 84),
            vendor_version=bytes(data[100:116]),
        )


@dataclass(frozen=True, kw_only=True)
class Flogi(_LoginPayload):
    CODE: ClassVar[int] = ElsCode.FLOGI


@dataclass(frozen=True, kw_only=True)
class Plogi(_LoginPayload):
    CODE: ClassVar[int] = ElsCode.PLOGI
    common_features: CommonFeatures | int = CommonFeatures.CIRO


@dataclass(frozen=True, kw_only=True)
class LoginAcc(_LoginPayload):
    """LS_ACC to FLOGI or PLOGI: the responder's own service parameters."""

    CODE: ClassVar[int] = ElsCode.LS_ACC


# --- PRLI / PRLO ------------------------------------------------------------------------------


class PrliFlags(enum.IntFlag):
    NONE = 0
    ORIG_PA_VALID = 0x80
    RESP_PA_VALID = 0x40
    ESTABLISH_IMAGE_PAIR = 0x20  # in an LS_ACC: image pair established


class PrliAccCode(enum.IntEnum):
    """Low nibble of the page flags byte in an LS_ACC to PRLI/PRLO."""

    NONE = 0
    EXECUTED = 1
    NO_RESOURCES = 2
    INIT_NOT_COMPLETE = 3
    NO_SUCH_PA = 4
    CONFIG_PRECLUDES = 5
    EXECUTED_CONDITIONALLY = 6
    MULTIPLE_PAGES_UNSUPPORTED = 7
    PAGE_INVALID = 8


class FcpServiceParams(enum.IntFlag):
    NONE = 0
    TASK_RETRY_ID = 0x0200
    RETRY = 0x0100
    CONFIRMED_COMPLETION = 0x0080
    DATA_OVERLAY = 0x0040
    INITIATOR = 0x0020
    TARGET = 0x0010
    READ_XFER_RDY_DISABLED = 0x0002  # FCP-4: always set
    WRITE_XFER_RDY_DISABLED = 0x0001


PRLI_PAGE_LEN = 16
_PAGE = ">BBBxIII"


@dataclass(frozen=True)
class ServiceParamPage:
    """One 16-byte PRLI/PRLO service parameter page (for FCP: TYPE 0x08)."""

    service_params: FcpServiceParams | int = FcpServiceParams.NONE
    flags: PrliFlags | int = PrliFlags.NONE
    response_code: PrliAccCode | int = PrliAccCode.NONE
    type: int = FcType.FCP
    type_ext: int = 0
    orig_pa: int = 0
    resp_pa: int = 0

    def __post_init__(self) -> None:
        check_uint("service_params", int(self.service_params), 32, PayloadError)
        if int(self.flags) & ~0xE0:
            raise PayloadError("page flags: only 0x80/0x40/0x20 are defined")
        check_uint("response_code", int(self.response_code), 4, PayloadError)
        for name in ("type", "type_ext"):
            check_uint(name, getattr(self, name), 8, PayloadError)
        for name in ("orig_pa", "resp_pa"):
            check_uint(name, getattr(self, name), 32, PayloadError)

    def pack(self) -> bytes:
        return struct.pack(
            _PAGE,
            self.type,
            self.type_ext,
            int(self.flags) | int(self.response_code),
            self.orig_pa,
            self.resp_pa,
            int(self.service_params),
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> ServiceParamPage:
        t, ext, fl, opa, rpa, sp = unpack_from(_PAGE, data, offset, what="service page", exc=PayloadError)
        return cls(
            service_params=FcpServiceParams(sp),
            flags=PrliFlags(fl & 0xE0),
            response_code=enum_or_int(PrliAccCode, fl & 0x0F),
            type=t,
            type_ext=ext,
            orig_pa=opa,
            resp_pa=rpa,
        )


@dataclass(frozen=True)
class _PagedPayload:
    CODE: ClassVar[int]

    pages: tuple[ServiceParamPage, ...]

    def __post_init__(self) -> None:
        pages = tuple(self.pages)
        if not pages or not all(isinstance(p, ServiceParamPage) for p in pages):
            raise PayloadError("at least one ServiceParamPage is required")
        if 4 + PRLI_PAGE_LEN * len(pages) > FC_MAX_DATA_FIELD:
            raise PayloadError("too many service parameter pages")
        object.__setattr__(self, "pages", pages)

    def pack(self) -> bytes:
        length = 4 + PRLI_PAGE_LEN * len(self.pages)
        return struct.pack(">BBH", self.CODE, PRLI_PAGE_LEN, length) + b"".join(p.pack() for p in self.pages)

    @classmethod
    def unpack(cls, data: bytes) -> _PagedPayload:
        code, page_len, length = unpack_from(">BBH", data, what="PRLI/PRLO header", exc=PayloadError)
        if code != cls.CODE:
            raise PayloadError(f"code 0x{code:02x}, expected 0x{cls.CODE:02x}")
        if page_len != PRLI_PAGE_LEN:
            raise PayloadError(f"page length {page_len}, only 16-byte pages are supported")
        if length != len(data) or length < 4 + PRLI_PAGE_LEN or (length - 4) % PRLI_PAGE_LEN:
            raise PayloadError(f"payload length field {length} does not match {len(data)} bytes of pages")
        pages = tuple(ServiceParamPage.unpack(data, off) for off in range(4, length, PRLI_PAGE_LEN))
        return cls(pages)


@dataclass(frozen=True)
class Prli(_PagedPayload):
    CODE: ClassVar[int] = ElsCode.PRLI


@dataclass(frozen=True)
class PrliAcc(_PagedPayload):
    CODE: ClassVar[int] = ElsCode.LS_ACC


@dataclass(frozen=True)
class Prlo(_PagedPayload):
    CODE: ClassVar[int] = ElsCode.PRLO


@dataclass(frozen=True)
class PrloAcc(_PagedPayload):
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
class LsRjt:
    """LS_RJT (8 bytes): `01 00 00 00`, reserved, reason, explanation, vendor unique."""

    CODE: ClassVar[int] = ElsCode.LS_RJT

    reason: LsRjtReason | int
    explanation: LsRjtExplanation | int = LsRjtExplanation.NONE
    vendor: int = 0

    def __post_init__(self) -> None:
        check_uint("reason", int(self.reason), 8, PayloadError)
        check_uint("explanation", int(self.explanation), 8, PayloadError)
        check_uint("vendor", self.vendor, 8, PayloadError)

    def pack(self) -> bytes:
        return struct.pack(">B3xxBBB", self.CODE, int(self.reason), int(self.explanation), self.vendor)

    @classmethod
    def unpack(cls, data: bytes) -> LsRjt:
        if len(data) != 8:
            raise PayloadError(f"LS_RJT must be 8 bytes, got {len(data)}")
        code, reason, expl, vendor = unpack_from(">B3xxBBB", data, what="LS_RJT", exc=PayloadError)
        if code != cls.CODE:
            raise PayloadError("not an LS_RJT")
        return cls(enum_or_int(LsRjtReason, reason), enum_or_int(LsRjtExplanation, expl), vendor)


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
