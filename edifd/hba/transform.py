"""Hooks a session applies to its traffic: the per-session frame transform and the login policy.

EDIF fills both (the port installs each secure login's `EspTransform`, port_security.py); by
default frames pass unchanged and PRLI follows PLOGI at once.

Where ESP slots in (docs/fc-wire.md "Where the ESP stage slots in", docs/edif.md):
`outbound` turns a clear FCP frame into `frame.with_esp(EspHeader(spi, seq), iv + ct + icv)`
(DF_CTL 0x40; AAD = FC header (CS_CTL zeroed) ‖ SPI ‖ seq; nonce = salt ‖ IV); `inbound` verifies
and returns `frame.without_esp(plain)`, or None to drop (bad ICV, replay, unknown SPI). Only FCP
frames (TYPE 0x08) pass through the transform: ELS (FLOGI/PLOGI/PRLI/LOGO/AUTH_ELS) and BLS
(ABTS/BA_ACC) stay in clear, so login, authentication and recovery still work when SAs break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edifd.fc import Frame


class FrameTransform(Protocol):
    """Per-session protection of FCP frames. Must not raise: return None to drop a frame. An
    outbound None means "cannot be sent protected": the frame is not sent (counted in
    `dropped_frames`), and a command whose FCP_CMND was withheld fails with SENSE_NOT_AUTHORIZED."""

    def outbound(self, frame: Frame) -> Frame | None: ...

    def inbound(self, frame: Frame) -> Frame | None: ...


class IdentityTransform:
    """No protection: the plaintext data path."""

    def outbound(self, frame: Frame) -> Frame:
        return frame

    def inbound(self, frame: Frame) -> Frame | None:
        return frame


@dataclass(frozen=True)
class PeerInfo:
    """What a login policy knows about the peer after PLOGI."""

    wwpn: int
    wwnn: int
    n_port_id: int
    security: bool  # the peer's PLOGI/ACC carried the FC-SP security bit (0x0020)


class LoginPolicy(Protocol):
    """Decides whether PRLI (and so FCP) may follow PLOGI now.

    A secure peer (EDIF): return False until AUTH_OK; the session then waits in AUTH_PENDING
    until `auth_complete()` is called on it (`Hba.auth_complete(remote_wwpn)`).
    """

    def prli_allowed(self, peer: PeerInfo, local_security: bool) -> bool: ...


class AllowAll:
    """Default policy: no authentication step between PLOGI and PRLI."""

    def prli_allowed(self, peer: PeerInfo, local_security: bool) -> bool:
        return True


class RequireAuthWhenSecure:
    """PRLI only after AUTH_OK when both sides set the security bit (qla2xxx EDIF order, qla_edif.c)."""

    def prli_allowed(self, peer: PeerInfo, local_security: bool) -> bool:
        return not (peer.security and local_security)
