"""Service parameters of the login ELS (FC-LS): the common and class parameters that FLOGI,
PLOGI and their LS_ACC carry, and the PRLI/PRLO service parameter pages. The concrete payloads,
each with its command code, are in `els`. Layouts follow Linux fc_els.h and Wireshark packet-fcels.c.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ._codec import check_bytes, check_uint, enum_or_int, unpack_from
from .errors import PayloadError
from .frame import FC_MAX_DATA_FIELD, FcType


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
class LoginPayload:
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
    def unpack(cls, data: bytes) -> LoginPayload:
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
class PagedPayload:
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
    def unpack(cls, data: bytes) -> PagedPayload:
        code, page_len, length = unpack_from(">BBH", data, what="PRLI/PRLO header", exc=PayloadError)
        if code != cls.CODE:
            raise PayloadError(f"code 0x{code:02x}, expected 0x{cls.CODE:02x}")
        if page_len != PRLI_PAGE_LEN:
            raise PayloadError(f"page length {page_len}, only 16-byte pages are supported")
        if length != len(data) or length < 4 + PRLI_PAGE_LEN or (length - 4) % PRLI_PAGE_LEN:
            raise PayloadError(f"payload length field {length} does not match {len(data)} bytes of pages")
        pages = tuple(ServiceParamPage.unpack(data, off) for off in range(4, length, PRLI_PAGE_LEN))
        return cls(pages)
