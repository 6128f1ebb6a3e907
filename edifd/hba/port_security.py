"""PortSecurity: `SecurityControl` (security.py) for one `InitiatorPort`, sans-IO.

Each call becomes the matching `InitiatorSession` call, its frames sent through the port
(`InitiatorPort.push`); the port hands every batch of session events to `deliver`, which passes the
security ones on to the listener as `SecurityEvent`s.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edifd.fc import LsRjt, LsRjtExplanation, LsRjtReason

from .events import ElsReceived, ElsReplyReceived, LoggedIn, SessionEvent, StateChanged
from .security import (
    AuthElsReply,
    AuthElsRequest,
    LoginStarted,
    PortView,
    SecurityEvent,
    SecurityListener,
)
from .transform import FrameTransform, IdentityTransform

if TYPE_CHECKING:
    from .port import InitiatorPort

log = logging.getLogger(__name__)

_LS_RJT_UNABLE = LsRjt(LsRjtReason.UNABLE, LsRjtExplanation.NONE).pack()


class PortSecurity:
    """The security-control interface of `port` (its `security` attribute)."""

    def __init__(self, port: InitiatorPort) -> None:
        self._port = port
        self._listener: SecurityListener | None = None

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

    def install_transform(self, transform: FrameTransform | None) -> None:
        self._port.session.transform = transform if transform is not None else IdentityTransform()

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
                out.append(ev)
            elif isinstance(ev, LoggedIn):
                out.append(LoginStarted(ev.peer, ev.peer.security and self._port.session.security))
            elif isinstance(ev, ElsReceived):
                out.append(AuthElsRequest(ev.frame.fc4_payload, ev.frame))
            elif isinstance(ev, ElsReplyReceived):
                out.append(AuthElsReply(ev.ox_id, ev.payload))
        try:
            self._listener(out)
        except Exception:  # noqa: BLE001 - the engine's bug must not kill the link
            log.exception("port %s: EDIF security listener failed", self._port.config.name)
