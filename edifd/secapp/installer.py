"""The SA installer: turns a negotiated child SA into the host's SA_UPDATE / AUTH_OK sequence.

A first pair is installed as RX, TX, AUTH_OK. A rekey is make-before-break (qla2xxx): new RX, new TX,
AUTH_OK (the new pair is in use from here), old TX out, old RX out (the host keeps it until the peer
is seen on the new SA, so its removal is not awaited), then an IKE Delete of the old pair. Each step
is a small frozen dataclass (`Step`); what the head step waits for is a `Wait`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edifd.fc import wwn_str
from edifd.ike import ChildSaEstablished, IkeError, State
from edifd.proto import (
    AuthFailReason,
    AuthOk,
    Response,
    SaDirection,
    SaFlags,
    SaStatus,
    SaUpdate,
    SaUpdateCompl,
    Status,
)

from .events import AppNotice, SessionRekeyed, SessionSecure
from .relay import proto_cipher, sa_delete, sa_pair
from .session import AppContext, KeyPair, SessionState, TargetSession

RETRY_LATER_DELAY = 0.5  # seconds before repeating an AUTH_OK / SA_UPDATE answered RETRY_LATER
# The host keeps an old RX SA until the peer is seen on the new one (3 frames) or 20 s pass (qla2xxx); the
# next rekey waits for that removal's SA_UPDATE_COMPL, or this long, so it never needs a third RX slot.
RX_DELETE_GRACE = 30.0


# --- steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PutSa:
    """Send an SA_UPDATE (an add, or the old TX's removal) and wait for its SA_UPDATE_COMPL."""

    body: SaUpdate


@dataclass(frozen=True)
class RetireRx:
    """Send the old RX SA's removal; the host holds it until the peer switched, so it is not awaited."""

    body: SaUpdate


@dataclass(frozen=True)
class SendAuthOk:
    """Tell the host the pair is installed (it then runs PRLI); wait for the RESPONSE."""


@dataclass(frozen=True)
class DeleteChild:
    """IKE INFORMATIONAL Delete of the replaced pair, sent when no other IKE request is outstanding."""

    spi_in: int


Step = PutSa | RetireRx | SendAuthOk | DeleteChild


# --- what the head step waits for --------------------------------------------------------------------


@dataclass(frozen=True)
class SaComplWait:
    """The SA_UPDATE_COMPL (or a refusing RESPONSE) of one SA_UPDATE."""

    spi: int
    direction: SaDirection
    delete: bool

    @classmethod
    def of(cls, body: SaUpdate | SaUpdateCompl) -> SaComplWait:
        return cls(body.spi, body.direction, SaFlags.DELETE in body.flags)


@dataclass(frozen=True)
class AuthOkWait:
    """The RESPONSE to AUTH_OK."""


Wait = SaComplWait | AuthOkWait


@dataclass(frozen=True)
class RxDeletePending:
    """An old RX SA whose removal was sent: the next rekey waits for its COMPL or `give_up_at`."""

    spi: int
    give_up_at: float


class SaInstaller:
    """Runs each session's steps; `send_ike(session, message)` sends an IKE request (the IKE driver's)."""

    def __init__(self, ctx: AppContext, send_ike: Callable[[TargetSession, bytes], None]) -> None:
        self._ctx = ctx
        self._send_ike = send_ike

    def on_child(self, s: TargetSession, child: ChildSaEstablished) -> None:
        """IKE negotiated a child SA: plan its installation (first pair, or a rekey of the current one)."""
        assert s.port is not None
        pair = KeyPair(child.spi_in, child.spi_out, proto_cipher(child.cipher))
        sa = sa_pair(s.port, child, rekey=s.current is not None)
        if s.current is None:
            if s.incoming is not None:
                return
            s.incoming, s.trigger, s.state = pair, "", SessionState.INSTALLING
            s.steps.extend([PutSa(sa.rx), PutSa(sa.tx), SendAuthOk()])
        elif child.rekeyed_spi_in == s.current.spi_in and s.incoming is None:
            old = s.current
            s.incoming = pair
            s.trigger = s.trigger or "peer"
            s.steps.extend([
                PutSa(sa.rx),
                PutSa(sa.tx),
                SendAuthOk(),
                PutSa(sa_delete(s.port, old.spi_out, SaDirection.TX, old.cipher)),
                RetireRx(sa_delete(s.port, old.spi_in, SaDirection.RX, old.cipher)),
                DeleteChild(old.spi_in),
            ])
        else:
            self._ctx.emit(AppNotice(f"unexpected extra child SA from {wwn_str(s.wwpn)}; not installed"))
            return
        self.advance(s)

    def advance(self, s: TargetSession) -> None:
        """Run the steps until one has to wait."""
        ctx = self._ctx
        while s.waiting is None and s.steps and s.port is not None:
            step = s.steps[0]
            match step:
                case PutSa(body):
                    s.steps.popleft()
                    ctx.emit(body)
                    s.waiting = SaComplWait.of(body)
                case RetireRx(body):
                    s.steps.popleft()
                    ctx.emit(body)
                    s.rx_delete_pending = RxDeletePending(body.spi, ctx.now() + RX_DELETE_GRACE)
                case SendAuthOk():
                    s.steps.popleft()
                    s.waiting = AuthOkWait()
                    ctx.emit(AuthOk(s.port))
                    if s.current is not None and s.incoming is not None:  # rekey: the new pair is in use now
                        old, new = s.current, s.incoming
                        new.since, new.base = ctx.now(), s.counters
                        s.current, s.incoming = new, None
                        ctx.emit(SessionRekeyed(s.wwpn, old.spi_in, new.spi_in, s.trigger))
                        s.trigger = ""
                case DeleteChild(spi_in):
                    if s.ike is None or s.ike.state is not State.ESTABLISHED:
                        s.steps.popleft()
                        continue
                    if s.ike.retransmit() is not None:
                        return  # window size 1: sent when the outstanding request is answered
                    s.steps.popleft()
                    try:
                        self._send_ike(s, s.ike.delete_child(spi_in))
                    except IkeError:
                        pass  # the peer already deleted it
        if not s.steps and s.waiting is None and s.state is SessionState.INSTALLING:
            s.state = SessionState.SECURE

    def on_ike_idle(self, s: TargetSession) -> None:
        """The IKE request window may be free: an IKE Delete at the head of the steps can go now."""
        if s.steps and isinstance(s.steps[0], DeleteChild) and s.waiting is None:
            self.advance(s)

    def busy(self, s: TargetSession) -> bool:
        """Steps left or awaited: no rekey may start."""
        return bool(s.steps) or s.waiting is not None

    # --- the host's answers ----------------------------------------------------------------------------

    def on_sa_compl(self, s: TargetSession, ev: SaUpdateCompl) -> None:
        key = SaComplWait.of(ev)
        pending = s.rx_delete_pending
        if pending and key == SaComplWait(pending.spi, SaDirection.RX, True):
            s.rx_delete_pending = None  # the old RX slot is free: the next rekey may go
            return
        if s.waiting != key:
            return  # e.g. the delayed removal of an old RX SA
        if ev.status is not SaStatus.SUCCESS:
            self._ctx.fail(s, AuthFailReason.AUTH_FAILED,
                           f"SA_UPDATE {ev.direction.name} failed: {ev.status.name} (fw {ev.fw_status:#x})")
            return
        s.waiting = None
        self.advance(s)

    def on_sa_update_answer(self, s: TargetSession, request: SaUpdate, body: Response) -> None:
        awaited = s.waiting == SaComplWait.of(request)
        if awaited and body.status is Status.RETRY_LATER:
            s.resend, s.retry_at = request, self._ctx.now() + RETRY_LATER_DELAY
        elif body.status is not Status.OK and awaited:
            what = f"SA_UPDATE {request.direction.name} refused"
            self._ctx.fail(s, AuthFailReason.AUTH_FAILED, f"{what}: {body.status.name}")

    def on_auth_ok_answer(self, s: TargetSession, request: AuthOk, body: Response) -> None:
        if not isinstance(s.waiting, AuthOkWait):
            return
        ctx = self._ctx
        if body.status is Status.OK:
            s.waiting = None
            s.retry_at = None
            pair = s.incoming
            if s.state is SessionState.INSTALLING and s.current is None and pair is not None:
                s.current, s.incoming = pair, None
                pair.since, pair.base = ctx.now(), s.counters
                s.state, s.failures = SessionState.SECURE, 0
                ctx.emit(SessionSecure(s.wwpn, pair.spi_in, pair.spi_out, pair.cipher))
            self.advance(s)
        elif body.status is Status.RETRY_LATER:
            s.resend, s.retry_at = request, ctx.now() + RETRY_LATER_DELAY
        else:
            ctx.fail(s, AuthFailReason.AUTH_FAILED, f"AUTH_OK refused: {body.status.name}")

    def resend(self, s: TargetSession) -> bool:
        """The RETRY_LATER pause is over: repeat the refused AUTH_OK / SA_UPDATE. False if there is none."""
        if s.resend is None:
            return False
        body, s.resend, s.retry_at = s.resend, None, None
        self._ctx.emit(body)
        return True
