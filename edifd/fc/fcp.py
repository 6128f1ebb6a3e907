"""FCP-4 information units (SCSI over FC, TYPE 0x08): FCP_CMND, FCP_XFER_RDY, FCP_RSP.

FCP_DATA has no IU header: its frames carry data with the relative offset in the frame
header's Parameter field (see `exchange.fcp_data`). Layouts follow Linux fc_fcp.h and
Wireshark packet-fcp.c; FCP_RSP is always sent in the 24-byte form with length fields.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._codec import check_bytes, check_uint, enum_or_int, unpack_from
from .errors import PayloadError
from .frame import FC_MAX_DATA_FIELD, RCtl

CDB_LEN = 16
_CMND_HEAD = ">8sBBBB"  # LUN, CRN, priority|task attribute, TMF flags, add CDB len|RDDATA|WRDATA


class TaskAttr(enum.IntEnum):
    SIMPLE = 0
    HEAD_OF_QUEUE = 1
    ORDERED = 2
    ACA = 4


class TaskMgmt(enum.IntFlag):
    NONE = 0
    ABORT_TASK_SET = 0x02
    CLEAR_TASK_SET = 0x04
    LU_RESET = 0x10
    TARGET_RESET = 0x20  # obsolete in FCP-4
    CLEAR_ACA = 0x40


def lun_to_bytes(lun: int) -> bytes:
    """SAM single-level LUN: peripheral addressing below 256, flat addressing up to 16383."""
    check_uint("lun", lun, 14, PayloadError)
    if lun < 256:
        return bytes((0, lun)) + bytes(6)
    return bytes((0x40 | lun >> 8, lun & 0xFF)) + bytes(6)


def lun_from_bytes(lun: bytes) -> int:
    """Inverse of `lun_to_bytes`; other (multi-level, extended) LUN forms raise `PayloadError`."""
    if len(lun) != 8 or any(lun[2:]):
        raise PayloadError(f"not a single-level LUN: {bytes(lun).hex()}")
    method = lun[0] >> 6
    if method == 0 and lun[0] == 0:
        return lun[1]
    if method == 1:
        return (lun[0] & 0x3F) << 8 | lun[1]
    raise PayloadError(f"unsupported LUN addressing method in {bytes(lun).hex()}")


@dataclass(frozen=True, kw_only=True)
class FcpCmnd:
    """FCP_CMND: 32 bytes, +4·N for a longer CDB, +4 with bidirectional data.

    `cdb` shorter than 16 bytes is zero-padded to 16 (FCP_CDB is a fixed field); longer CDBs
    must be 16 + 4·N bytes and use the ADDITIONAL FCP_CDB LENGTH field.
    """

    lun: bytes = bytes(8)
    cdb: bytes = b""
    dl: int = 0
    read: bool = False
    write: bool = False
    task_attr: TaskAttr | int = TaskAttr.SIMPLE
    priority: int = 0
    crn: int = 0
    tmf: TaskMgmt | int = TaskMgmt.NONE
    bidi_read_dl: int | None = None  # present exactly when read and write are both set

    R_CTL = RCtl.FCP_CMND

    def __post_init__(self) -> None:
        lun = check_bytes("lun", self.lun, PayloadError)
        if len(lun) != 8:
            raise PayloadError("lun must be 8 bytes (use lun_to_bytes)")
        cdb = check_bytes("cdb", self.cdb, PayloadError)
        if len(cdb) < CDB_LEN:
            cdb = cdb + bytes(CDB_LEN - len(cdb))
        if (len(cdb) - CDB_LEN) % 4 or (len(cdb) - CDB_LEN) // 4 > 63:
            raise PayloadError(f"a {len(cdb)}-byte CDB must be 16 + 4*N bytes, N <= 63")
        object.__setattr__(self, "lun", lun)
        object.__setattr__(self, "cdb", cdb)
        check_uint("dl", self.dl, 32, PayloadError)
        check_uint("crn", self.crn, 8, PayloadError)
        check_uint("priority", self.priority, 4, PayloadError)
        check_uint("task_attr", int(self.task_attr), 3, PayloadError)
        check_uint("tmf", int(self.tmf), 8, PayloadError)
        if not isinstance(self.read, bool) or not isinstance(self.write, bool):
            raise PayloadError("read/write must be bool")
        bidi = self.read and self.write
        if bidi != (self.bidi_read_dl is not None):
            raise PayloadError("bidi_read_dl is required exactly when both read and write are set")
        if self.bidi_read_dl is not None:
            check_uint("bidi_read_dl", self.bidi_read_dl, 32, PayloadError)

    @property
    def lun_number(self) -> int:
        return lun_from_bytes(self.lun)

    def pack(self) -> bytes:
        add_len = (len(self.cdb) - CDB_LEN) // 4
        head = struct.pack(
            _CMND_HEAD,
            self.lun,
            self.crn,
            self.priority << 3 | int(self.task_attr),
            int(self.tmf),
            add_len << 2 | self.read << 1 | self.write,
        )
        tail = struct.pack(">I", self.dl)
        if self.bidi_read_dl is not None:
            tail += struct.pack(">I", self.bidi_read_dl)
        return head + self.cdb + tail

    @classmethod
    def unpack(cls, data: bytes) -> FcpCmnd:
        lun, crn, attr, tmf, flags = unpack_from(_CMND_HEAD, data, what="FCP_CMND", exc=PayloadError)
        add_len, read, write = flags >> 2, bool(flags & 2), bool(flags & 1)
        cdb_end = 12 + CDB_LEN + 4 * add_len
        expected = cdb_end + 4 + (4 if read and write else 0)
        if len(data) != expected:
            raise PayloadError(f"FCP_CMND is {len(data)} bytes, its fields say {expected}")
        if attr & 0x80:
            raise PayloadError("FCP_CMND: reserved bit 7 of byte 9 set")
        (dl,) = unpack_from(">I", data, cdb_end, what="FCP_DL", exc=PayloadError)
        bidi = None
        if read and write:
            (bidi,) = unpack_from(">I", data, cdb_end + 4, what="FCP_BIDI_DL", exc=PayloadError)
        return cls(
            lun=lun,
            cdb=bytes(data[12:cdb_end]),
            dl=dl,
            read=read,
            write=write,
            task_attr=enum_or_int(TaskAttr, attr & 7),
            priority=(attr >> 3) & 0xF,
            crn=crn,
            tmf=TaskMgmt(tmf),
            bidi_read_dl=bidi,
        )


@dataclass(frozen=True)
class FcpXferRdy:
    """FCP_XFER_RDY (12 bytes): where the next burst starts and how long it is."""

    data_ro: int
    burst_len: int

    R_CTL = RCtl.FCP_XFER_RDY

    def __post_init__(self) -> None:
        check_uint("data_ro", self.data_ro, 32, PayloadError)
        check_uint("burst_len", self.burst_len, 32, PayloadError)

    def pack(self) -> bytes:
        return struct.pack(">II4x", self.data_ro, self.burst_len)

    @classmethod
    def unpack(cls, data: bytes) -> FcpXferRdy:
        if len(data) != 12:
            raise PayloadError(f"FCP_XFER_RDY must be 12 bytes, got {len(data)}")
        ro, burst = unpack_from(">II4x", data, what="FCP_XFER_RDY", exc=PayloadError)
        return cls(ro, burst)


class FcpRspFlags(enum.IntFlag):
    NONE = 0
    RSP_LEN_VALID = 0x01
    SNS_LEN_VALID = 0x02
    RESID_OVER = 0x04
    RESID_UNDER = 0x08
    CONF_REQ = 0x10
    BIDI_READ_RESID_OVER = 0x20
    BIDI_READ_RESID_UNDER = 0x40
    BIDI_RSP = 0x80


class RspCode(enum.IntEnum):
    """FCP_RSP_INFO byte 3."""

    TMF_COMPLETE = 0
    DATA_LEN_MISMATCH = 1
    CMND_FIELDS_INVALID = 2
    DATA_RO_MISMATCH = 3
    TMF_REJECTED = 4
    TMF_FAILED = 5
    TMF_INCORRECT_LUN = 9


_RSP_HEAD = ">8xHBBIII"  # reserved, retry delay, flags, status, resid, sns len, rsp len


@dataclass(frozen=True, kw_only=True)
class FcpRsp:
    """FCP_RSP. Flags are derived from the fields: a residual direction, sense, rsp_info, bidi.

    resid_under/resid_over say whether `resid` counts bytes not transferred (under) or bytes
    the target could not take or give (over); at most one of them is set.
    """

    status: int = 0
    resid: int = 0
    resid_under: bool = False
    resid_over: bool = False
    sense: bytes = b""
    rsp_info: bytes | None = None  # 4 or 8 bytes; byte 3 is RSP_CODE
    retry_delay: int = 0
    conf_req: bool = False
    bidi_read_resid: int | None = None
    bidi_read_under: bool = False
    bidi_read_over: bool = False

    R_CTL = RCtl.FCP_RSP

    def __post_init__(self) -> None:
        check_uint("status", self.status, 8, PayloadError)
        check_uint("resid", self.resid, 32, PayloadError)
        check_uint("retry_delay", self.retry_delay, 16, PayloadError)
        if self.resid_under and self.resid_over:
            raise PayloadError("resid_under and resid_over are mutually exclusive")
        if self.bidi_read_under and self.bidi_read_over:
            raise PayloadError("bidi_read_under and bidi_read_over are mutually exclusive")
        if (self.bidi_read_under or self.bidi_read_over) and self.bidi_read_resid is None:
            raise PayloadError("bidi read residual flags need bidi_read_resid")
        if self.bidi_read_resid is not None:
            check_uint("bidi_read_resid", self.bidi_read_resid, 32, PayloadError)
        sense = check_bytes("sense", self.sense, PayloadError)
        object.__setattr__(self, "sense", sense)
        if self.rsp_info is not None:
            info = check_bytes("rsp_info", self.rsp_info, PayloadError)
            if len(info) not in (4, 8):
                raise PayloadError("rsp_info must be 4 or 8 bytes")
            object.__setattr__(self, "rsp_info", info)
        if len(self.pack()) > FC_MAX_DATA_FIELD:
            raise PayloadError("FCP_RSP does not fit one frame")

    @classmethod
    def tmf_response(cls, code: RspCode | int) -> FcpRsp:
        return cls(rsp_info=bytes((0, 0, 0, int(code))))

    @property
    def rsp_code(self) -> RspCode | int | None:
        return None if self.rsp_info is None else enum_or_int(RspCode, self.rsp_info[3])

    @property
    def flags(self) -> FcpRspFlags:
        f = FcpRspFlags.NONE
        if self.rsp_info is not None:
            f |= FcpRspFlags.RSP_LEN_VALID
        if self.sense:
            f |= FcpRspFlags.SNS_LEN_VALID
        if self.resid_over:
            f |= FcpRspFlags.RESID_OVER
        if self.resid_under:
            f |= FcpRspFlags.RESID_UNDER
        if self.conf_req:
            f |= FcpRspFlags.CONF_REQ
        if self.bidi_read_resid is not None:
            f |= FcpRspFlags.BIDI_RSP
        if self.bidi_read_over:
            f |= FcpRspFlags.BIDI_READ_RESID_OVER
        if self.bidi_read_under:
            f |= FcpRspFlags.BIDI_READ_RESID_UNDER
        return f

    def pack(self) -> bytes:
        info = self.rsp_info or b""
        head = struct.pack(
            _RSP_HEAD, self.retry_delay, self.flags, self.status, self.resid, len(self.sense), len(info)
        )
        tail = struct.pack(">I", self.bidi_read_resid) if self.bidi_read_resid is not None else b""
        return head + info + self.sense + tail

    @classmethod
    def unpack(cls, data: bytes) -> FcpRsp:
        retry, flags, status, resid, sns_len, rsp_len = unpack_from(
            _RSP_HEAD, data, what="FCP_RSP", exc=PayloadError
        )
        f = FcpRspFlags(flags)
        # Length fields count only when their VALID flag is set (FCP-4).
        rsp_len = rsp_len if f & FcpRspFlags.RSP_LEN_VALID else 0
        sns_len = sns_len if f & FcpRspFlags.SNS_LEN_VALID else 0
        if f & FcpRspFlags.RSP_LEN_VALID and rsp_len not in (4, 8):
            raise PayloadError(f"FCP_RSP_LEN {rsp_len} is not 4 or 8")
        bidi = bool(f & FcpRspFlags.BIDI_RSP)
        expected = 24 + rsp_len + sns_len + (4 if bidi else 0)
        if len(data) != expected:
            raise PayloadError(f"FCP_RSP is {len(data)} bytes, its fields say {expected}")
        if f & FcpRspFlags.SNS_LEN_VALID and sns_len == 0:
            raise PayloadError("FCP_SNS_LEN_VALID with a zero sense length")
        if (f & FcpRspFlags.RESID_OVER) and (f & FcpRspFlags.RESID_UNDER):
            raise PayloadError("FCP_RSP: both RESID_OVER and RESID_UNDER set")
        bidi_flags = FcpRspFlags.BIDI_READ_RESID_OVER | FcpRspFlags.BIDI_READ_RESID_UNDER
        if f & bidi_flags and not bidi:
            raise PayloadError("FCP_RSP: bidi residual flag without BIDI_RSP")
        if f & bidi_flags == bidi_flags:
            raise PayloadError("FCP_RSP: both bidi residual flags set")
        info = bytes(data[24 : 24 + rsp_len]) if f & FcpRspFlags.RSP_LEN_VALID else None
        sense = bytes(data[24 + rsp_len : 24 + rsp_len + sns_len])
        bidi_resid = None
        if bidi:
            (bidi_resid,) = unpack_from(">I", data, expected - 4, what="bidi resid", exc=PayloadError)
        return cls(
            status=status,
            resid=resid,
            resid_under=bool(f & FcpRspFlags.RESID_UNDER),
            resid_over=bool(f & FcpRspFlags.RESID_OVER),
            sense=sense,
            rsp_info=info,
            retry_delay=retry,
            conf_req=bool(f & FcpRspFlags.CONF_REQ),
            bidi_read_resid=bidi_resid,
            bidi_read_under=bool(f & FcpRspFlags.BIDI_READ_RESID_UNDER),
            bidi_read_over=bool(f & FcpRspFlags.BIDI_READ_RESID_OVER),
        )
