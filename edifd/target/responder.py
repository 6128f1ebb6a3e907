"""The storage side of EDIF for one target port: the IKE responder (`AuthResponder`) joined to the
target sessions, and the SAs it negotiates installed in each session's ESP stage.

Per link (one initiator): a `SaDatabase` + `EspTransform` (the session's transform) and a login
policy that lets PRLI through only once that initiator authenticated on this login and both SAs
are installed. So an unauthenticated secure initiator never gets an image pair: its PRLI gets
LS_RJT 0x09/0x48 (authentication required) and any FCP_CMND it sends is dropped and counted
(`clear_fcp` by the ESP stage, or "FCP_CMND without PRLI" by the session). A non-secure initiator on
a port with `auth` gets the same answer: this port serves authenticated initiators only.

Rekey (docs/secapp.md §6): the new RX SA is installed at once; the new TX SA only when the first
frame verified on that new RX SA (the initiator switched) or when `RemoveSa` for the old pair
comes, so we never send on an SA the initiator cannot decrypt yet. Not thread-safe: the target
port's event loop owns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edifd.edif import EspTransform, SaDatabase, TeardownRequested
from edifd.fc import Frame
from edifd.hba.transform import PeerInfo
from edifd.proto import SaDirection
from edifd.secapp.config import SecConfig
from edifd.secapp.relay import proto_cipher
from edifd.secapp.responder import (
    AuthResponder,
    ElsAnswer,
    ElsRequest,
    InstallSa,
    PeerAuthenticated,
    PeerAuthFailed,
    PeerRefused,
    RemoveSa,
)

from .session import TargetSession

log = logging.getLogger(__name__)


@dataclass
class LinkSecurity:
    """EDIF state of one link (one initiator login): its SAs and whether it may do PRLI."""

    sadb: SaDatabase = field(default_factory=SaDatabase)
    esp: EspTransform = field(init=False)
    authenticated: bool = False
    pending_tx: InstallSa | None = None  # a rekeyed pair whose TX waits for the initiator's switch

    def __post_init__(self) -> None:
        self.esp = EspTransform(self.sadb)

    def prli_allowed(self, peer: PeerInfo, local_security: bool) -> bool:
        return self.authenticated and self.sadb.both_confirmed


@dataclass
class ResponderCounters:
    auth_els: int = 0
    authenticated: int = 0
    auth_failed: int = 0
    refused: int = 0
    sa_installed: int = 0
    sa_removed: int = 0
    teardowns: int = 0  # sessions logged out on the ESP stage's request (ICV failures)

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


class PortResponder:
    """EDIF for one target port: `attach(session)` per link, `on_auth_els`, `after_frames`, `reset`."""

    def __init__(self, wwpn: int, config: SecConfig, *, responder: AuthResponder | None = None) -> None:
        self.responder = responder or AuthResponder(wwpn, config.peers, config.ike)
        self.counters = ResponderCounters()

    def attach(self, session: TargetSession) -> LinkSecurity:
        link = LinkSecurity()
        session.transform = link.esp
        session.policy = link
        session.relay_auth_els = True
        return link

    def new_login(self, session: TargetSession, link: LinkSecurity) -> LinkSecurity:
        """PLOGI (or logout): a new login needs a new negotiation; the old keys are zeroized."""
        if session.initiator_wwpn is not None:
            self.responder.reset(session.initiator_wwpn)
        link.sadb.clear()
        return self.attach(session)

    def on_auth_els(self, session: TargetSession, link: LinkSecurity, frame: Frame) -> list[Frame]:
        """One AUTH_ELS request from the initiator: the frames to send back."""
        self.counters.auth_els += 1
        wwpn = session.initiator_wwpn or 0
        out: list[Frame] = []
        outs = self.responder.on_auth_els(wwpn, frame.fc4_payload, local_port_id=session.local_id,
                                          remote_port_id=session.remote_id)
        for o in outs:
            if isinstance(o, ElsAnswer):
                out += session.reply_els(frame, o.payload)
            elif isinstance(o, ElsRequest):
                out += session.send_els(o.payload)
            elif isinstance(o, InstallSa):
                self._install(link, o)
            elif isinstance(o, RemoveSa):
                self._remove(link, o)
            elif isinstance(o, PeerAuthenticated):
                self.counters.authenticated += 1
                log.info("initiator %016x authenticated", wwpn)
            elif isinstance(o, PeerAuthFailed):
                self.counters.auth_failed += 1
                link.authenticated = False
                log.warning("initiator %016x failed authentication: %s", wwpn, o.reason)
            elif isinstance(o, PeerRefused):
                self.counters.refused += 1
                log.warning("AUTH_ELS from %016x refused: %s", wwpn, o.reason)
        return out

    def _install(self, link: LinkSecurity, o: InstallSa) -> None:
        c = o.child
        cipher = proto_cipher(c.cipher)
        r = link.sadb.install(SaDirection.RX, c.spi_in, cipher, c.key_in, c.salt_in)
        if not r.ok:
            log.error("RX SA install failed: %s", r.detail)
            return
        self.counters.sa_installed += 1
        if link.sadb.tx_sa is None or c.rekeyed_spi_in is None:
            self._install_tx(link, o)
            link.authenticated = True
        else:
            link.pending_tx = o  # rekey: switch TX when the initiator does

    def _install_tx(self, link: LinkSecurity, o: InstallSa) -> None:
        c = o.child
        r = link.sadb.install(SaDirection.TX, c.spi_out, proto_cipher(c.cipher), c.key_out, c.salt_out)
        if not r.ok:
            log.error("TX SA install failed: %s", r.detail)
        else:
            self.counters.sa_installed += 1

    def _remove(self, link: LinkSecurity, o: RemoveSa) -> None:
        p = link.pending_tx
        if p is not None and p.child.rekeyed_spi_in == o.spi_in:
            link.pending_tx = None
            self._install_tx(link, p)
        if o.spi_out:
            link.sadb.delete(SaDirection.TX, o.spi_out, now=0.0)
        # The initiator sends its IKE Delete long after its TX switch: nothing is in flight on it.
        link.sadb.delete(SaDirection.RX, o.spi_in, now=0.0, force=True)
        self.counters.sa_removed += 1

    def after_frames(self, session: TargetSession, link: LinkSecurity, now: float) -> list[Frame]:
        """After received frames: switch TX once the initiator is seen on the new RX SA; act on
        the ESP stage's teardown requests (ICV failures): LOGO, so the initiator logs in and
        authenticates again. Returns the frames to send."""
        p = link.pending_tx
        if p is not None:
            sa = link.sadb.rx_sa(p.child.spi_in)
            if sa is not None and sa.frames > 0:
                link.pending_tx = None
                self._install_tx(link, p)
        out: list[Frame] = []
        for ev in link.esp.tick(now):
            if isinstance(ev, TeardownRequested):
                self.counters.teardowns += 1
                log.warning("initiator %016x: tearing the session down: %s (%s)", session.initiator_wwpn or 0,
                            ev.reason.value, ev.detail)
                out += session.logout()  # its LoginEvent resets this link's keys
        return out
