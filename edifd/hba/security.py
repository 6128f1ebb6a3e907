"""SecurityControl: the one interface through which the EDIF engine drives an HBA port (sans-IO types).

In the spirit of strongSwan's `kernel_ipsec_t`: the key manager — the EDIF engine, acting for the
security application in the EDIF VM — says *what* it wants of the port (security bit on, log in
again, hold the login, install or delete this SA, send this AUTH_ELS) and hears back typed events,
never building a frame or touching the session. The HBA owns the FC side (ELS framing, exchange IDs,
LS_RJT, senses) and, like qla2xxx's driver and firmware, the SAs of its logins: every login gets a
fresh `SaDatabase` with its `EspTransform` (`edifd.edif`) as the session's transform while it is
secure, and loses them (zeroized) when it ends.

kernel_ipsec_t, mapped:
- `add_sa` is `add_sa`: an install (qla2xxx SA_UPDATE without DELETE); a rekey is an install that
  carries SaFlags.REKEY, followed later by `del_sa` of the old SPI (make-before-break).
- `del_sa` is `del_sa` (SA_UPDATE with DELETE; FORCE_DELETE skips the delayed RX delete).
- `query_sa` is `query_sa`, widened to the login: both directions confirmed, the SA snapshot and
  the ESP counters (what status and GET_STATS report, never key material).
- `get_spi` is not offered: in EDIF the IKE peer in the EDIF VM chooses the SPIs and hands them over
  in SA_UPDATE (qla2xxx never allocates one either).
- `update_sa` is not offered: an SA never moves to other addresses or ports here (its login is its
  one point-to-point link, and a new login starts with no SAs), and a rekey is add-with-REKEY then del.
Secure login (`set_security`, `relogin`, `hold`, `auth_complete`) and the AUTH_ELS relay complete it.

Calls are made on the HBA's loop thread. `add_sa`/`del_sa` answer with an `SaResult` whose events
(the SA_UPDATE completion) are the call's own, for the caller to report after its answer. Everything
else — what the frames did to the SAs (delayed RX delete done, ICV teardown, rekey hint), the time
(the delayed RX delete's 20 s, on the port's timer) and a login's end (its SAs cleared, pending
completions reported) — comes to the listener given to `attach`: after every batch of received
frames, timer and call (possibly with no event), the port hands it the security events of that
batch, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edifd.edif import DeleteRx, EspCounters, RekeyNeeded, SaResult, SaUpdateDone, TeardownRequested
from edifd.edif import Event as SaEvent
from edifd.fc import ElsCode, Frame
from edifd.proto import Cipher, SaDirection, SaFlags

from .events import LOGGED_IN, SessionState, StateChanged, StateReason
from .transform import PeerInfo

NO_FLAGS = SaFlags(0)


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
    `secure`: both sides set the FC-SP security bit, so PRLI waits for `auth_complete()` and the
    login's FCP frames go through its ESP stage."""

    peer: PeerInfo
    secure: bool


@dataclass(frozen=True)
class LoginEnded:
    """The current login ended and its SAs are gone (zeroized); what clearing them produced (the
    DeleteRx of each RX SA, a pending RX delete's completion, what the ESP stage still had queued)
    comes just before this event. `state`, `reason`: the state change that ended it, which follows;
    (PLOGI, PLOGI) when a new PLOGI replaced it (a `LoginStarted` follows)."""

    state: SessionState
    reason: StateReason


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


@dataclass(frozen=True)
class SaState:
    """`query_sa()`: the SAs of the current login as the key manager may see them (no key material)."""

    both_confirmed: bool  # an RX and a TX SA installed: AUTH_OK may let PRLI go
    sas: dict[str, object]  # SaDatabase.snapshot(): SPIs, ciphers, frames/bytes per SA, pending delete
    counters: EspCounters  # a copy of the ESP stage's counters


# A StateChanged carries a `StateReason` (LINK_UP, LINK_DOWN, LOGOUT, PEER_LOGO, RSCN,
# PLOGI_REJECTED, HELD, ...): the engine maps it to its SESSION_SHUTDOWN reason without reading text.
# SaUpdateDone, DeleteRx, RekeyNeeded and TeardownRequested are the SA database's and ESP stage's
# events (`edifd.edif.events`), passed on unchanged.
SecurityEvent = (StateChanged | LoginStarted | LoginEnded | AuthElsRequest | AuthElsReply
                 | SaUpdateDone | DeleteRx | RekeyNeeded | TeardownRequested)
SecurityListener = Callable[[list[SecurityEvent]], None]


class SecurityControl(Protocol):
    """What a key manager may do to one HBA port (loop thread only)."""

    def attach(self, listener: SecurityListener) -> None:
        """Deliver this port's security events to `listener` from now on; from the next PLOGI on,
        every login gets its own SA database (before that the port's transform is left alone)."""
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

    # --- the SAs of the current login (kernel_ipsec_t's add_sa / del_sa / query_sa) ----------------

    def add_sa(self, direction: SaDirection, spi: int, cipher: Cipher, key: bytes, salt: bytes, *,
               flags: SaFlags = NO_FLAGS) -> SaResult:
        """Install an SA in the current secure login (qla2xxx semantics, docs/edif.md §4: two slots
        per direction, the newest TX SA is the one in use; REKEY marks a rekey install). REFUSED
        without a secure login."""
        ...

    def del_sa(self, direction: SaDirection, spi: int, *, force: bool = False,
               flags: SaFlags | None = None) -> SaResult:
        """Delete an SA: TX at once; RX at once if it is the only one or `force`, else once frames
        arrive on the other RX SA or after the delay (its completion then comes as an event).
        `flags` is echoed in the completion (default DELETE, plus FORCE_DELETE if `force`)."""
        ...

    def query_sa(self) -> SaState | None:
        """The current login's SAs; None between logins."""
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
    "LOGGED_IN", "NO_FLAGS", "AuthElsReply", "AuthElsRequest", "DeleteRx", "LoginEnded", "LoginStarted",
    "PortView", "RekeyNeeded", "SaEvent", "SaResult", "SaState", "SaUpdateDone", "SecurityControl",
    "SecurityEvent", "SecurityListener", "SessionState", "StateChanged", "StateReason", "TeardownRequested",
]
