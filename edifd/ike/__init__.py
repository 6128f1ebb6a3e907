"""IKEv2 for FC-SP-2 (RFC 7296 with RFC 4595's FC payloads), sans-IO: initiator and responder state machines.

Public entry points: `Initiator`, `Responder`, `IkeConfig`, `Identity`, the events in `events`, the
`State` of an IKE SA, and `IkeError`.
"""

from .config import (
    AES_GCM_16_128,
    AES_GCM_16_256,
    AUTH_ELS_IKE_MAX,
    GMAC_128,
    GMAC_256,
    CipherSuite,
    Identity,
    IkeConfig,
    TransportProfile,
)
from .errors import ConfigError, CryptoError, IkeError, ParseError, StateError
from .events import (
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    Established,
    NegotiationFailed,
    PeerAlive,
    Send,
)
from .initiator import Initiator
from .payloads import FcSelector, Ipv4Selector
from .responder import Responder
from .session import State

__all__ = [
    "AES_GCM_16_128",
    "AES_GCM_16_256",
    "AUTH_ELS_IKE_MAX",
    "GMAC_128",
    "GMAC_256",
    "AuthFailed",
    "ChildSaEstablished",
    "ChildSaFailed",
    "CipherSuite",
    "ConfigError",
    "CryptoError",
    "Deleted",
    "Established",
    "FcSelector",
    "Identity",
    "IkeConfig",
    "IkeError",
    "Initiator",
    "Ipv4Selector",
    "NegotiationFailed",
    "ParseError",
    "PeerAlive",
    "Responder",
    "Send",
    "State",
    "StateError",
    "TransportProfile",
]
