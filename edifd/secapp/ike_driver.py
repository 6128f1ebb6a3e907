"""The IKE driver: one `edifd.ike.Initiator` per target, carried over the host's AUTH_ELS relay.

IKE requests go out as ELS_SEND; the peer's IKE messages come back as ELS_RCVD, each answered with an
ELS_REPLY (LS_ACC, or LS_RJT for anything that is not our IKE SA's). It retransmits our outstanding
request, turns IKE's events into installer work or failures, and starts rekeys (lifetime, bytes).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

from edifd.fc import wwn_str
from edifd.ike import (
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    IkeError,
    Initiator,
    NegotiationFailed,
    Send,
)
from edifd.ike.codes import ProtocolId
from edifd.proto import (
    AuthFailReason,
    Body,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    GetPortInfo,
    PortInfo,
    PortRef,
    Response,
    Status,
)

from .config import IkePolicy
from .events import AppNotice
from .installer import SaInstaller
from .relay import (
    LS_ACC,
    LS_RJT_NO_AUTH,
    LS_RJT_PROTOCOL,
    RelayError,
    ike_config,
    new_tid,
    unwrap_ike,
    wrap_ike,
)
from .session import AppContext, SessionState, TargetSession

Rng = Callable[[int], bytes]
CertClock = Callable[[], datetime.datetime]


class IkeDriver:
    """IKE for every session of one port. `policy` is read at each new IKE SA (start() narrows it)."""

    def __init__(self, ctx: AppContext, *, rng: Rng, cert_clock: CertClock | None) -> None:
        self._ctx = ctx
        self._rng = rng
        self._cert_clock = cert_clock
        self.policy: IkePolicy = ctx.config.ike
        self.installer = SaInstaller(ctx, self.send)
        self.els_rejected = 0

    def begin(self, s: TargetSession, port: PortRef, local: PortInfo | None) -> None:
        """AUTH_NEEDED for `port`: a new IKE SA (IKE_SA_INIT), or, before PORT_INFO, ask for it first."""
        ctx = self._ctx
        if local is None:
            ctx.emit(AppNotice("AUTH_NEEDED before PORT_INFO; asking for it"))
            ctx.emit(GetPortInfo())
            s.port, s.state, s.retry_at = port, SessionState.IDLE, ctx.now() + ctx.config.reconnect_delay
            return
        cfg = ike_config(
            local_wwpn=local.wwpn,
            remote_wwpn=port.wwpn,
            local_port_id=local.port_id,
            remote_port_id=port.port_id,
            credentials=s.policy.credentials,
            policy=self.policy,
            rng=self._rng,
            clock=self._cert_clock,
        )
        s.port, s.ike, s.tid = port, Initiator(cfg), new_tid(self._rng)
        s.state, s.retry_at, s.deferred_needed = SessionState.NEGOTIATING, None, None
        try:
            first = s.ike.start()
        except IkeError as e:
            ctx.fail(s, AuthFailReason.POLICY, f"IKE: {e}")
            return
        self.send(s, first)

    def send(self, s: TargetSession, data: bytes) -> None:
        """One IKE message to the peer as ELS_SEND; a new request of ours (re)starts its retransmit timer."""
        assert s.port is not None and s.ike is not None
        if s.ike.retransmit() == data and s.retx_data != data:
            s.retx_data, s.retx_count = data, 0
            s.retx_at = self._ctx.now() + self._ctx.config.ike.retransmit_timeout
        self._ctx.emit(ElsSend(s.port, wrap_ike(data, s.tid)))

    # --- from the peer ---------------------------------------------------------------------------------

    def on_els_rcvd(self, s: TargetSession | None, ev: ElsRcvd) -> None:
        ctx = self._ctx

        def reject(rjt: bytes, why: str) -> None:
            self.els_rejected += 1
            ctx.emit(ElsReply(ev.port, ev.rx_exchange, ElsReplyAction.LS_RJT, rjt))
            ctx.emit(AppNotice(f"AUTH_ELS from {wwn_str(ev.port.wwpn)} refused: {why}"))

        if s is None or s.ike is None:
            reject(LS_RJT_NO_AUTH, "no authentication in progress")
            return
        try:
            tid, data = unwrap_ike(ev.payload)
        except RelayError as e:
            reject(LS_RJT_PROTOCOL, str(e))
            return
        if tid != s.tid:
            reject(LS_RJT_PROTOCOL, f"transaction id {tid:#x} is not ours")
            return
        try:
            events = s.ike.receive(data)
        except IkeError as e:
            reject(LS_RJT_PROTOCOL, f"IKE: {e}")  # state unchanged; a retransmission may still come
            return
        ctx.emit(ElsReply(ev.port, ev.rx_exchange, ElsReplyAction.LS_ACC, LS_ACC))
        self._on_ike_events(s, events)

    def _on_ike_events(self, s: TargetSession, events: Sequence[object]) -> None:
        ctx = self._ctx
        sends = [e for e in events if isinstance(e, Send)]
        for e in events:
            if s.ike is None:
                return  # failed meanwhile
            if isinstance(e, Send):
                self.send(s, e.data)
            elif isinstance(e, ChildSaEstablished):
                self.installer.on_child(s, e)
            elif isinstance(e, AuthFailed):
                # With a Send beside it we refuse the peer's AUTH (and tell it); else the peer refused ours.
                reason = AuthFailReason.AUTH_FAILED if sends else AuthFailReason.PEER_REJECTED
                ctx.fail(s, reason, e.reason)
            elif isinstance(e, NegotiationFailed):
                ctx.fail(s, AuthFailReason.POLICY, e.reason)
            elif isinstance(e, ChildSaFailed):
                if s.current is None and s.incoming is None:
                    ctx.fail(s, AuthFailReason.POLICY, f"no child SA: {e.reason}")
                else:  # a failed rekey: keep the current pair and try again later
                    s.rekey_blocked_until = ctx.now() + ctx.config.auth_retry_backoff
                    s.trigger = ""
                    ctx.emit(AppNotice(f"rekey of {wwn_str(s.wwpn)} refused: {e.reason}"))
            elif isinstance(e, Deleted):
                if e.protocol == ProtocolId.IKE:
                    ctx.fail(s, AuthFailReason.PEER_REJECTED, "peer deleted the IKE SA", backoff=False)
                elif s.current is not None and e.spi_in == s.current.spi_in and s.incoming is None:
                    ctx.fail(s, AuthFailReason.PEER_REJECTED, "peer deleted the pair in use", backoff=False)
                # A Delete of the pair being replaced: the peer rekeyed; our steps remove it from the HBA.
        if s.ike is not None and s.ike.retransmit() is None:
            s.retx_data = None
        self.installer.on_ike_idle(s)

    def on_els_answer(self, s: TargetSession | None, request: ElsSend, body: Body) -> None:
        """The host's answer to our ELS_SEND: the peer's LS_ACC / LS_RJT, or a delivery failure."""
        if s is None or s.ike is None:
            return
        ctx = self._ctx
        if isinstance(body, ElsResponse):
            if body.result is ElsResult.LS_ACC:
                return
            try:
                tid = unwrap_ike(request.payload)[0]
            except RelayError:
                return
            if tid == s.tid:  # not a leftover of an earlier IKE SA
                ctx.fail(s, AuthFailReason.PEER_REJECTED, "peer answered our AUTH_ELS with LS_RJT")
            return
        if isinstance(body, Response) and body.status not in (Status.OK, Status.RETRY_LATER):
            # The host could not deliver it (no login, stale generation): the session is gone there.
            ctx.drop(s, f"AUTH_ELS not delivered: {body.status.name}")
            s.retry_at = ctx.now() + ctx.config.reconnect_delay
        # RETRY_LATER: the retransmission timer sends it again.

    # --- timers ----------------------------------------------------------------------------------------

    def retransmit(self, s: TargetSession, now: float) -> bool:
        """Repeat our unanswered IKE request (exponential backoff); False if the session failed on it."""
        if s.ike is None or s.retx_data is None or now < s.retx_at:
            return True
        cfg = self._ctx.config.ike
        if s.ike.retransmit() != s.retx_data:
            s.retx_data = None
        elif s.retx_count >= cfg.retransmit_tries:
            self._ctx.fail(s, AuthFailReason.TIMEOUT, "the peer did not answer the IKE request")
            return False
        else:
            s.retx_count += 1
            s.retx_at = now + cfg.retransmit_timeout * 2**s.retx_count
            assert s.port is not None
            self._ctx.emit(ElsSend(s.port, wrap_ike(s.retx_data, s.tid)))
        return True

    def maybe_rekey(self, s: TargetSession, now: float) -> None:
        """CREATE_CHILD_SA for the pair in use when its lifetime or byte budget is spent."""
        cur, r = s.current, self._ctx.config.rekey
        if cur is None or s.ike is None or s.incoming is not None or self.installer.busy(s):
            return
        if now < s.rekey_blocked_until or s.ike.retransmit() is not None:
            return
        if s.rx_delete_pending is not None and now < s.rx_delete_pending.give_up_at:
            return
        # Counters below the baseline were reset by the host (qla zeroes them on an SA add): count from 0.
        used = max(n - b if n >= b else n for n, b in zip(s.counters, cur.base, strict=True))
        if r.lifetime and now - cur.since >= r.lifetime:
            s.trigger = "lifetime"
        elif r.bytes and used >= r.bytes:
            s.trigger = "bytes"
        else:
            return
        try:
            self.send(s, s.ike.rekey_child(cur.spi_in))
        except IkeError as e:
            s.rekey_blocked_until = now + self._ctx.config.auth_retry_backoff
            self._ctx.emit(AppNotice(f"cannot rekey {wwn_str(s.wwpn)}: {e}"))
