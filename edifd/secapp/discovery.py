"""Target discovery: which of the host's remote ports to secure, and when to (re)connect to them.

Configured targets (not `skip`) are connected with SECURE_CONNECT when GET_TARGETS lists them or
PORT_ONLINE announces them; AUTH_NEEDED then starts IKE (the IKE driver). Losing a target (TARGET_GONE,
PORT_OFFLINE, SESSION_SHUTDOWN) forgets its session and, where it may come back by itself, asks again
after `reconnect_delay`. Unconfigured targets are named once and refused (AUTH_FAIL POLICY) if the host
asks for their authentication anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from edifd.fc import wwn_str
from edifd.proto import (
    AuthFail,
    AuthFailReason,
    GetTargets,
    PortInfo,
    PortOffline,
    PortOnline,
    PortRef,
    Response,
    RoleFlags,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Status,
    TargetGone,
    TargetList,
)

from .events import AppNotice
from .ike_driver import IkeDriver
from .session import AppContext, SessionState, TargetSession

_SERVING = (SessionState.NEGOTIATING, SessionState.INSTALLING, SessionState.SECURE)
# Shutdown reasons after which the target does not come back by itself soon: wait for it to be announced.
_NO_RECONNECT = (ShutdownReason.PORT_GONE, ShutdownReason.LINK_DOWN, ShutdownReason.APP_STOP)


class TargetDiscovery:
    def __init__(self, ctx: AppContext, sessions: Mapping[int, TargetSession], ike: IkeDriver) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._ike = ike
        self._warned: set[int] = set()

    def _why_not(self, wwpn: int) -> str:
        return "configured as skip" if wwpn in self._ctx.config.peers else "not configured"

    def connect(self, s: TargetSession, port: PortRef) -> None:
        s.port = port
        s.state = SessionState.CONNECTING
        s.retry_at = None
        self._ctx.emit(SecureConnect(port))

    def on_targets(self, page: TargetList) -> None:
        """One page of GET_TARGETS: connect the idle configured targets, ask for the next page."""
        for e in page.entries:
            s = self._sessions.get(e.port.wwpn)
            if s is None:
                if e.port.wwpn not in self._warned and e.roles & RoleFlags.TARGET:
                    self._warned.add(e.port.wwpn)
                    why = self._why_not(e.port.wwpn)
                    self._ctx.emit(AppNotice(f"target {wwn_str(e.port.wwpn)} is {why}; not securing it"))
                continue
            if s.state is SessionState.IDLE and e.roles & RoleFlags.TARGET:
                self.connect(s, e.port)
        nxt = page.start + len(page.entries)
        if page.entries and nxt < page.total:
            self._ctx.emit(GetTargets(start=nxt))

    def on_secure_connect_answer(self, s: TargetSession, body: Response) -> None:
        if s.state is not SessionState.CONNECTING or body.status is Status.OK:
            return
        ctx = self._ctx
        if body.status is Status.STALE_GENERATION:
            s.state, s.retry_at = SessionState.IDLE, None
            ctx.emit(GetTargets(wwpn=s.wwpn))  # learn the current login, then connect to it
        elif body.status is Status.NO_SUCH_PORT:
            s.state, s.retry_at = SessionState.IDLE, None  # wait for PORT_ONLINE / the next target list
        else:
            s.state, s.retry_at = SessionState.IDLE, ctx.now() + ctx.config.reconnect_delay
        ctx.emit(AppNotice(f"SECURE_CONNECT {wwn_str(s.wwpn)}: {body.status.name}"))

    def on_auth_needed(self, port: PortRef, local: PortInfo | None) -> None:
        """The host wants this login authenticated: start IKE, or refuse a target we do not secure."""
        ctx = self._ctx
        s = self._sessions.get(port.wwpn)
        if s is None:
            why = self._why_not(port.wwpn)
            ctx.emit(AppNotice(f"AUTH_NEEDED for {wwn_str(port.wwpn)}, which is {why}: AUTH_FAIL"))
            ctx.emit(AuthFail(port, AuthFailReason.POLICY))
            return
        if s.state is SessionState.FAILED and s.retry_at is not None and ctx.now() < s.retry_at:
            s.deferred_needed = port  # do not hammer the peer with a credential that just failed
            return
        if s.port == port and s.state in _SERVING:
            return  # a repeat for the login we already serve (same generation); a new login restarts
        if s.state is not SessionState.IDLE:
            ctx.drop(s, "new login", quiet=s.state in (SessionState.CONNECTING, SessionState.FAILED))
        self._ike.begin(s, port, local)

    def on_port_event(self, s: TargetSession, ev: TargetGone | PortOffline | PortOnline, name: str) -> None:
        """TARGET_GONE / PORT_OFFLINE forget the session; PORT_ONLINE connects an idle one."""
        ctx = self._ctx
        if isinstance(ev, PortOnline):
            if s.state is SessionState.IDLE:
                self.connect(s, ev.port)
        elif s.state is not SessionState.FAILED:  # a failed one keeps its backoff
            ctx.drop(s, name)
            if isinstance(ev, PortOffline):  # it may log in again by itself; ask once after a pause
                s.retry_at = ctx.now() + ctx.config.reconnect_delay

    def on_shutdown(self, s: TargetSession, ev: SessionShutdown) -> None:
        if s.state is SessionState.FAILED:
            return  # the logout that follows our AUTH_FAIL: the backoff stays, whatever the reason
        self._ctx.drop(s, f"session shutdown: {ev.reason.name}")
        if ev.reason not in _NO_RECONNECT:
            s.retry_at = self._ctx.now() + self._ctx.config.reconnect_delay

    def retry(self, s: TargetSession, local: PortInfo | None) -> None:
        """The reconnect / failure backoff of an IDLE or FAILED session ended."""
        if s.state not in (SessionState.FAILED, SessionState.IDLE) or s.port is None:
            return
        needed = s.deferred_needed
        s.retry_at = None
        if needed is not None:
            self._ike.begin(s, needed, local)
        else:
            # Our generation may be stale by now (the login we knew ended): 0 = whatever is current.
            self.connect(s, dataclasses.replace(s.port, generation=0))
