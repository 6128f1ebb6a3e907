"""FC wire formats over TCP, sans-IO: FCIP encapsulation, FC-2 frames, ELS/BLS, FCP-4 IUs,
FC-SP AUTH_ELS and ESP_Header framing, and a pcap trace writer.

Every parser raises only `FcError` (and subclasses); `FcipStreamDecoder.feed()` never raises.
Our wire-format choices are recorded in docs/fc-wire.md.
"""

from ._codec import wwn_str
from .bls import Abts, BaAcc, BaRjt, BaRjtExplanation, BaRjtReason, BlsPayload, parse_bls
from .burst import DataRun, DataSequence, WireBurst
from .els import (
    ElsCode,
    ElsPayload,
    Flogi,
    LoginAcc,
    Logo,
    LsAcc,
    LsRjt,
    LsRjtExplanation,
    LsRjtReason,
    Plogi,
    Prli,
    PrliAcc,
    Prlo,
    PrloAcc,
    RawEls,
    Rscn,
    RscnAddressFormat,
    RscnPage,
    parse_els,
)
from .errors import ErrorReason, FcError, FcipError, FrameError, PayloadError
from .exchange import (
    FramePayload,
    abts_frame,
    ba_acc_frame,
    ba_rjt_frame,
    els_reply,
    els_request,
    fcp_cmnd_frame,
    fcp_data_frames,
    fcp_rsp_frame,
    parse_payload,
    request_frame,
    response_f_ctl,
    response_frame,
    xfer_rdy_frame,
)
from .fcip import FCIP_TCP_PORT, FcipStreamDecoder, LinkError, decode_record, encode_frame
from .fcp import (
    FcpCmnd,
    FcpRsp,
    FcpRspFlags,
    FcpXferRdy,
    RspCode,
    TaskAttr,
    TaskMgmt,
    lun_from_bytes,
    lun_to_bytes,
)
from .fcsp import AUTH_ELS_CODE, ESP_HEADER_LEN, AuthEls, AuthFlags, AuthMsgCode, AuthProtocolId, EspHeader
from .frame import (
    FC_DATA_FRAME_SIZE,
    FC_MAX_DATA_FIELD,
    FCTL_REQ,
    FCTL_RESP,
    DfCtl,
    Eof,
    FCtl,
    FcType,
    Frame,
    FrameHeader,
    RCtl,
    Sof,
    fc_crc,
    fill_for,
)
from .service_params import (
    ClassOptions,
    ClassParams,
    CommonFeatures,
    FcpServiceParams,
    PrliAccCode,
    PrliFlags,
    ServiceParamPage,
)

__all__ = [
    "wwn_str", "AUTH_ELS_CODE", "ESP_HEADER_LEN",
    "FC_DATA_FRAME_SIZE", "FC_MAX_DATA_FIELD", "FCIP_TCP_PORT", "FCTL_REQ", "FCTL_RESP", "Abts",
    "AuthEls", "AuthFlags", "AuthMsgCode", "AuthProtocolId", "BaAcc", "BaRjt", "BaRjtExplanation",
    "BaRjtReason", "BlsPayload", "ClassOptions", "ClassParams", "CommonFeatures", "DataRun", "DataSequence",
    "DfCtl", "ElsCode",
    "ElsPayload", "Eof", "ErrorReason", "EspHeader", "FCtl", "FcError", "FcType", "FcipError",
    "FcipStreamDecoder", "FcpCmnd", "FcpRsp", "FcpRspFlags", "FcpServiceParams", "FcpXferRdy", "Flogi",
    "Frame", "FrameError", "FrameHeader", "FramePayload", "LinkError", "LoginAcc", "Logo", "LsAcc",
    "LsRjt", "LsRjtExplanation", "LsRjtReason", "PayloadError", "Plogi", "Prli", "PrliAcc",
    "PrliAccCode", "PrliFlags", "Prlo", "PrloAcc", "RCtl", "RawEls", "Rscn", "RscnAddressFormat",
    "RscnPage", "RspCode", "ServiceParamPage", "Sof", "TaskAttr", "TaskMgmt", "WireBurst", "abts_frame",
    "ba_acc_frame", "ba_rjt_frame", "decode_record", "els_reply", "els_request", "encode_frame",
    "fc_crc", "fcp_cmnd_frame", "fcp_data_frames", "fcp_rsp_frame", "fill_for", "lun_from_bytes",
    "lun_to_bytes", "parse_bls", "parse_els", "parse_payload", "request_frame", "response_f_ctl",
    "response_frame", "xfer_rdy_frame"
]
