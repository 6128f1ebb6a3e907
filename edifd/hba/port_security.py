"""PortSecurity: `SecurityControl` (security.py) for one `InitiatorPort`, sans-IO.

Each login call becomes the matching `InitiatorSession` call, its frames sent through the port
(`InitiatorPort.push`). Once a key manager is attached, every login has its `LoginSas` — a fresh
`SaDatabase` and the `EspTransform` on top, the session's transform while the login is secure — and
`add_sa`/`del_sa`/`query_sa` act on the current one. The port hands every batch of session events to
`deliver`, which turns the security ones into `SecurityEvent`s, ends and starts the logins' SAs as
the batch says, advances their time and passes it all on to the listener.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edifd.edif import EspTransform, SaDatabase, SaResult
from edifd.fc import LsRjt, LsRjtExplanation, LsRjtReason
from edifd.proto import Cipher, SaDirection, SaFlags, Status

from .events import (
    LOGGED_IN,
    ElsReceived,
    ElsReplyReceived,
    LoggedIn,
    SessionEvent,
    SessionState,
    StateChanged,
    StateReason,
)
from .security import (
    NO_FLAGS,
    AuthElsReply,
    AuthElsRequest,
    LoginEnded,
    LoginStarted,
    PortView,
    SaState,
    SecurityEvent,
    SecurityListener,
)
from .transform import IdentityTransform

if TYPE_CHECKING:
    from .port import InitiatorPort

log = logging.getLogger(__name__)

_LS_RJT_UNABLE = LsRjt(LsRjtReason.UNABLE, LsRjtExplanation.NONE).pack()
_NOT_SECURE = SaResult(Status.REFUSED, "no secure login")


@dataclass
class LoginSas:
    """The SAs of one login (qla2xxx: the session's SADB): never inherited by the next login."""

    secure: bool
    sadb: SaDatabase = field(default_factory=SaDatabase)
    esp: EspTransform = field(init=False)

    def __post_init__(self) -> None:
        self.esp = EspTransform(self.sadb)


class PortSecurity:
    """The security-control interface of `port` (its `security` attribute)."""

    def __init__(self, port: InitiatorPort) -> None:
        self._port = port
        self._listener: SecurityListener | None = None
        self.login_sas: LoginSas | None = None  # the current login's (tests and status may look)

    def attach(self, listener: SecurityListener) -> None:
        self._listener = listener

    def now(self) -> float:
        return self._port.now()

    def view(self) -> PortView:
        s, c = self._port.session, self._port.config
        return PortView(s.state, c.wwpn, c.wwnn, s.local_id, s.remote_wwpn, s.remote_id)

    # --- secure login ----------------------------------------------------------------------------

    def set_security(self, on: bool) -> None:
        self._port.session.security = on

    def relogin(self, why: str) -> None:
        self._port.push(self._port.session.relogin(self.now(), why))

    def hold(self, why: str) -> None:
        self._port.push(self._port.session.hold(self.now(), why))

    def auth_complete(self) -> None:
        self._port.push(self._port.session.auth_complete(self.now()))

    # --- the SAs of the current login --------------------------------------------------------------

    def add_sa(self, direction: SaDirection, spi: int, cipher: Cipher, key: bytes, salt: bytes, *,
               flags: SaFlags = NO_FLAGS) -> SaResult:
        sas = self.login_sas
        if sas is None or not sas.secure:
            return _NOT_SECURE
        return sas.sadb.install(direction, spi, cipher, key, salt, flags=flags)

    def del_sa(self, direction: SaDirection, spi: int, *, force: bool = False,
               flags: SaFlags | None = None) -> SaResult:
        sas = self.login_sas
        if sas is None or not sas.secure:
            return _NOT_SECURE
        return sas.sadb.delete(direction, spi, now=self.now(), force=force, flags=flags)

    def query_sa(self) -> SaState | None:
        sas = self.login_sas
        if sas is None:
            return None
        c = sas.esp.counters
        counters = dataclasses.replace(c, drops=dict(c.drops), blocked=dict(c.blocked))
        return SaState(sas.sadb.both_confirmed, sas.sadb.snapshot(), counters)

    def next_deadline(self) -> float | None:
        """When the current login's SAs next have something to do on their own (the port's timer)."""
        return self.login_sas.sadb.next_deadline() if self.login_sas is not None else None

    # --- the AUTH_ELS relay ----------------------------------------------------------------------

    def relay_auth_els(self, on: bool) -> None:
        self._port.session.relay_auth_els = on

    def send_auth_els(self, payload: bytes) -> int | None:
        ox_id, frames = self._port.session.send_els(payload)
        if not frames:
            return None
        self._port.push(frames)
        return ox_id

    def reply_auth_els(self, request: AuthElsRequest, payload: bytes) -> None:
        self._port.push(self._port.session.reply_els(request.frame, payload))

    def refuse_auth_els(self, request: AuthElsRequest) -> None:
        self._port.push(self._port.session.reply_els(request.frame, _LS_RJT_UNABLE))

    # --- events (the port calls this after every batch) --------------------------------------------

    def deliver(self, events: list[SessionEvent]) -> None:
        if self._listener is None:
            return
        out: list[SecurityEvent] = []
        for ev in events:
            if isinstance(ev, StateChanged):
                if ev.state not in LOGGED_IN and self.login_sas is not None:
                    self._end_login(out, ev.state, ev.reason)
                out.append(ev)
            elif isinstance(ev, LoggedIn):
                if self.login_sas is not None:  # a PLOGI while logged in is an implicit logout
                    self._end_login(out, SessionState.PLOGI, StateReason.PLOGI)
                out.append(self._start_login(ev))
            elif isinstance(ev, ElsReceived):
                out.append(AuthElsRequest(ev.frame.fc4_payload, ev.frame))
            elif isinstance(ev, ElsReplyReceived):
                out.append(AuthElsReply(ev.ox_id, ev.payload))
        if self.login_sas is not None:  # what the frames did, and the delayed RX delete's deadline
            out.extend(self.login_sas.esp.tick(self.now()))
        try:
            self._listener(out)
        except Exception:  # noqa: BLE001 - the engine's bug must not kill the link
            log.exception("port %s: EDIF security listener failed", self._port.config.name)

    def _start_login(self, ev: LoggedIn) -> LoginStarted:
        """A new login: its own SAs (none yet); a secure one's FCP goes through its ESP stage."""
        secure = ev.peer.security and self._port.session.security
        sas = self.login_sas = LoginSas(secure)
        self._port.session.transform = sas.esp if secure else IdentityTransform()
        return LoginStarted(ev.peer, secure)

    def _end_login(self, out: list[SecurityEvent], state: SessionState, reason: StateReason) -> None:
        """The keys go with the login (qla2xxx releases the SADB on session free); a pending RX
        delete still gets its completion."""
        sas, self.login_sas = self.login_sas, None
        assert sas is not None
        out.extend(sas.sadb.clear())
        out.extend(sas.esp.pop_events())
        out.append(LoginEnded(state, reason))
