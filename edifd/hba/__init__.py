"""The software HBA: initiator ports linked over TCP (FCIP) to target ports. Sans-IO: the login
state machine (`session`), its FCP half (`fcp`), their states and events (`events`), the per-session
hooks EDIF fills (`transform`) and the security-control interface the EDIF engine drives a port
through (`security`, implemented by `port_security`, which also keeps each login's SAs). Thin
asyncio edges: `port`, `hba`; the remote-LUN executor for the TCMU data path: `remote_lun`. See
docs/hba.md.
"""

from .counters import PortCounters, RemotePortCounters
from .events import (
    Completed,
    ElsReceived,
    ElsReplyReceived,
    LoggedIn,
    ResetLink,
    SessionState,
    StateChanged,
    StateReason,
)
from .fcp import (
    SENSE_INVALID_REQUEST,
    SENSE_IO_TIMEOUT,
    SENSE_NOT_AUTHORIZED,
    SENSE_PROTOCOL_ERROR,
    SENSE_TARGET_GONE,
)
from .hba import Hba, HbaError, parse_report_luns
from .port import InitiatorPort, PortConfig, PortStatus, Timers
from .session import InitiatorSession
from .transform import (
    AllowAll,
    FrameTransform,
    IdentityTransform,
    LoginPolicy,
    PeerInfo,
    RequireAuthWhenSecure,
)

__all__ = [
    "SENSE_INVALID_REQUEST", "SENSE_IO_TIMEOUT", "SENSE_NOT_AUTHORIZED", "SENSE_PROTOCOL_ERROR",
    "SENSE_TARGET_GONE", "AllowAll", "Completed", "ElsReceived", "ElsReplyReceived", "FrameTransform",
    "Hba", "HbaError", "IdentityTransform", "InitiatorPort", "InitiatorSession", "LoggedIn",
    "LoginPolicy", "PeerInfo", "PortConfig", "PortCounters", "PortStatus", "RemotePortCounters",
    "RequireAuthWhenSecure", "ResetLink", "SessionState", "StateChanged", "StateReason", "Timers",
    "parse_report_luns",
]
