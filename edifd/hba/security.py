"""SecurityControl: the one interface through which the EDIF engine drives an HBA port (sans-IO types).

In the spirit of strongSwan's `kernel_ipsec_t` (get_spi / add_sa / update_sa / query_sa / del_sa):
the key manager — the EDIF engine, acting for the security application in the EDIF VM — says *what*
it wants of the port (security bit on, log in again, hold the login, send this AUTH_ELS, protect the
login with this transform) and hears back typed events, never building a frame or touching the
session. The HBA owns the FC side (ELS framing, exchange IDs, LS_RJT, senses); the engine owns the
keys: it keeps the SA database and hands the port the transform that applies it
(`install_transform`), so the HBA needs nothing from `edifd.edif` or `edifd.ike`.

Calls are made on the HBA's loop thread. After every batch of received frames and every call
(possibly with no event), the port hands the listener given to `attach` the security events of that
batch, in order — so the listener can also drain what its transform saw (ICV failures, SA expiry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edifd.fc import ElsCode, Frame

from .events import LOGGED_IN, SessionState, StateChanged, StateReason
from .transform import FrameTransform, PeerInfo


@dataclass(frozen=True)
class PortView:
    """The port and its remote port as the engine may see them."""

    state: SessionState
    wwpn: int
    wwnn: int
    local_id: int  # our N_Port_ID (0 before the login assigned one)
    remote_wwpn: int | None  # learnt at FLOGI/PLOGI; None before the first login
    remote_id: int

    @property
    def logged_in(self) -> bool:
        """PLOGI done (waiting for AUTH, in PRLI or ready): SAs and AUTH_ELS belong to this login."""
        return self.state in LOGGED_IN


@dataclass(frozen=True)
class LoginStarted:
    """A PLOGI (ours or the peer's) completed: a new login of the remote port, with no SAs yet.
    `secure`: both sides set the FC-SP security bit, so PRLI waits for `auth_complete()`."""

    peer: PeerInfo
    secure: bool


@dataclass(frozen=True)
class AuthElsRequest:
    """The peer sent an AUTH_ELS request. Answer it once with `reply_auth_els` or `refuse_auth_els`;
    the request stands for its exchange (the engine never looks inside)."""

    payload: bytes
    frame: Frame = field(repr=False)


@dataclass(frozen=True)
class AuthElsReply:
    """The peer's LS_ACC or LS_RJT to the AUTH_ELS we sent as exchange `exchange`."""

    exchange: int
    payload: bytes

    @property
    def accepted(self) -> bool:
        return self.payload[:1] == bytes((ElsCode.LS_ACC,))


# A StateChanged carries a `StateReason` (LINK_UP, LINK_DOWN, LOGOUT, PEER_LOGO, RSCN,
# PLOGI_REJECTED, HELD, ...): the engine maps it to its SESSION_SHUTDOWN reason without reading text.
SecurityEvent = StateChanged | LoginStarted | AuthElsRequest | AuthElsReply
SecurityListener = Callable[[list[SecurityEvent]], None]


class SecurityControl(Protocol):
    """What a key manager may do to one HBA port (loop thread only)."""

    def attach(self, listener: SecurityListener) -> None:
        """Deliver this port's security events to `listener` from now on."""
        ...

    def now(self) -> float:
        """The port's clock (the one its timers use)."""
        ...

    def view(self) -> PortView: ...

    # --- secure login ----------------------------------------------------------------------------

    def set_security(self, on: bool) -> None:
        """Set or clear the FC-SP security bit in our PLOGI and PLOGI ACC (from the next login)."""
        ...

    def relogin(self, why: str) -> None:
        """PLOGI again now (a new login); nothing without a link or while one is on its way."""
        ...

    def hold(self, why: str) -> None:
        """LOGO and keep the login ended: commands fail with SENSE_NOT_AUTHORIZED until `relogin`."""
        ...

    def auth_complete(self) -> None:
        """The secure login is authenticated: PRLI may go (no-op unless AUTH_PENDING)."""
        ...

    def install_transform(self, transform: FrameTransform | None) -> None:
        """Protect this login's FCP frames with `transform` (the engine's ESP stage); None: clear."""
        ...

    # --- the AUTH_ELS relay ----------------------------------------------------------------------

    def relay_auth_els(self, on: bool) -> None:
        """On: received AUTH_ELS requests become `AuthElsRequest` events. Off: the port answers
        them LS_RJT "not supported" itself (no security application)."""
        ...

    def send_auth_els(self, payload: bytes) -> int | None:
        """Send an AUTH_ELS request (its payload, command code first) to the logged-in peer. The
        exchange number its `AuthElsReply` will carry; None when there is no peer to send to."""
        ...

    def reply_auth_els(self, request: AuthElsRequest, payload: bytes) -> None:
        """Answer `request` with this LS_ACC/LS_RJT payload; ValueError if it is neither."""
        ...

    def refuse_auth_els(self, request: AuthElsRequest) -> None:
        """Answer `request` with LS_RJT "unable to perform command"."""
        ...


__all__ = [
    "LOGGED_IN", "AuthElsReply", "AuthElsRequest", "LoginStarted", "PortView", "SecurityControl",
    "SecurityEvent", "SecurityListener", "SessionState", "StateChanged", "StateReason",
]
