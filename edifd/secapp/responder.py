"""Responder-side FC-SP-2 authentication, sans-IO: what the storage target's security software does.

`AuthResponder` takes the AUTH_ELS requests a target port receives from initiators and returns what to
do: the LS_ACC / LS_RJT for that exchange, new AUTH_ELS requests carrying IKE responses, and SA
installs / removals for the target's SA database. It never touches the link, a timer or a file; the
target (edif-target) only wires it:

    responder = AuthResponder(local_wwpn, config.peers, config.ike)
    for out in responder.on_auth_els(initiator_wwpn, payload, local_port_id=..., remote_port_id=...):
        match out:
            case ElsAnswer(payload):        answer the received exchange (LS_ACC or LS_RJT)
            case ElsRequest(wwpn, payload): send a new AUTH_ELS request to that initiator
            case InstallSa(wwpn, child):    program RX (child.spi_in/key_in/salt_in) and TX (…_out)
            case RemoveSa(wwpn, ...):       delete that pair (after a rekey, or when the IKE SA ends)
            case PeerAuthenticated / PeerAuthFailed / PeerRefused: state and logs (no secrets)

Rekey is driven by the initiator (CREATE_CHILD_SA with REKEY_SA, then an INFORMATIONAL Delete of the
old pair). For the target that means: `InstallSa(child)` with `child.rekeyed_spi_in` = the old pair's
inbound SPI adds the new pair next to the old one. Install its RX SA at once, but keep transmitting on
the old pair until the first frame arrives on the new RX SA or `RemoveSa` for the old pair comes: the
initiator installs its new RX SA only after our CREATE_CHILD_SA answer has reached it, so switching TX
at once could send frames it cannot yet decrypt. See docs/secapp.md §5-6.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edifd.fc import wwn_str
from edifd.ike import (
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    Established,
    IkeError,
    NegotiationFailed,
    Responder,
    Send,
    State,
)
from edifd.ike.codes import ProtocolId

from .config import IkePolicy, PeerPolicy
from .relay import (
    LS_ACC,
    LS_RJT_NO_AUTH,
    LS_RJT_PROTOCOL,
    RelayError,
    ike_config,
    unwrap_ike,
    wrap_ike,
)

_IKE_SA_INIT = 34


@dataclass(frozen=True)
class ElsAnswer:
    """Answer the received AUTH_ELS exchange with this payload (LS_ACC `02 00 00 00`, or an LS_RJT)."""

    payload: bytes

    @property
    def accepted(self) -> bool:
        return self.payload[:1] == LS_ACC[:1]


@dataclass(frozen=True)
class ElsRequest:
    """Send this AUTH_ELS payload to the initiator as a new ELS request (it carries an IKE message)."""

    remote_wwpn: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class InstallSa:
    """Install a child SA pair: RX from spi_in/key_in/salt_in, TX from spi_out/key_out/salt_out.
    `child.rekeyed_spi_in` names the pair it replaces (None for the first one)."""

    remote_wwpn: int
    child: ChildSaEstablished


@dataclass(frozen=True)
class RemoveSa:
    """Delete the pair with these SPIs (old pair after a rekey, or every pair when the IKE SA ends)."""

    remote_wwpn: int
    spi_in: int
    spi_out: int


@dataclass(frozen=True)
class PeerAuthenticated:
    remote_wwpn: int


@dataclass(frozen=True)
class PeerAuthFailed:
    """IKE authentication of this initiator failed (wrong PSK, certificate, proposal)."""

    remote_wwpn: int
    reason: str


@dataclass(frozen=True)
class PeerRefused:
    """An AUTH_ELS was refused without reaching IKE: unknown or skipped peer, or a malformed message."""

    remote_wwpn: int
    reason: str


ResponderOutput = (
    ElsAnswer | ElsRequest | InstallSa | RemoveSa | PeerAuthenticated | PeerAuthFailed | PeerRefused
)


@dataclass
class _Peer:
    ike: Responder
    tid: int
    children: dict[int, int] = field(default_factory=dict)  # spi_in -> spi_out, as installed
    replaced: dict[int, int] = field(default_factory=dict)  # pairs of the IKE SA this one replaces


class AuthResponder:
    """Per target port: one IKE responder per initiator WWPN, credentials from `peers`."""

    def __init__(
        self,
        local_wwpn: int,
        peers: Mapping[int, PeerPolicy],
        policy: IkePolicy,
        *,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        cert_clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.local_wwpn = local_wwpn
        self._peers_cfg = peers
        self._policy = policy
        self._rng = rng
        self._cert_clock = cert_clock
        self._peers: dict[int, _Peer] = {}
        self.refused = 0  # AUTH_ELS answered with LS_RJT

    def __repr__(self) -> str:
        return f"AuthResponder(local={wwn_str(self.local_wwpn)}, sessions={len(self._peers)})"

    def state(self, remote_wwpn: int) -> State | None:
        p = self._peers.get(remote_wwpn)
        return p.ike.state if p else None

    def installed(self, remote_wwpn: int) -> dict[int, int]:
        """spi_in -> spi_out of the pairs currently installed for that initiator."""
        p = self._peers.get(remote_wwpn)
        return dict(p.children) if p else {}

    def reset(self, remote_wwpn: int) -> list[ResponderOutput]:
        """The initiator's session ended (LOGO, link down): forget its IKE SA and remove its SAs."""
        p = self._peers.pop(remote_wwpn, None)
        if p is None:
            return []
        return [RemoveSa(remote_wwpn, i, o) for i, o in {**p.replaced, **p.children}.items()]

    def on_auth_els(
        self, remote_wwpn: int, payload: bytes, *, local_port_id: int, remote_port_id: int
    ) -> list[ResponderOutput]:
        """One received AUTH_ELS request. The first output is always the ElsAnswer for its exchange."""
        try:
            tid, data = unwrap_ike(payload)
        except RelayError as e:
            return self._refuse(remote_wwpn, LS_RJT_PROTOCOL, str(e))
        policy = self._peers_cfg.get(remote_wwpn)
        if policy is None or policy.credentials is None:
            why = "not configured" if policy is None else "configured as skip"
            return self._refuse(remote_wwpn, LS_RJT_NO_AUTH, f"initiator {wwn_str(remote_wwpn)} is {why}")
        peer = self._peers.get(remote_wwpn)
        events = None
        if peer is not None:
            try:
                events = peer.ike.receive(data)
            except IkeError as e:
                # A fresh IKE_SA_INIT means the initiator starts over (re-login, agent restart).
                if data[18] != _IKE_SA_INIT:
                    return self._refuse(remote_wwpn, LS_RJT_PROTOCOL, f"IKE: {e}")
        if events is None:
            cfg = ike_config(
                local_wwpn=self.local_wwpn,
                remote_wwpn=remote_wwpn,
                local_port_id=local_port_id,
                remote_port_id=remote_port_id,
                credentials=policy.credentials,
                policy=self._policy,
                rng=self._rng,
                clock=self._cert_clock,
            )
            fresh = _Peer(Responder(cfg), tid)
            try:
                events = fresh.ike.receive(data)
            except IkeError as e:
                return self._refuse(remote_wwpn, LS_RJT_PROTOCOL, f"IKE: {e}")
            if peer is not None:  # keep the old pairs until the new IKE SA has authenticated
                fresh.replaced = {**peer.replaced, **peer.children}
            peer = self._peers[remote_wwpn] = fresh
        peer.tid = tid
        return [ElsAnswer(LS_ACC), *self._events(remote_wwpn, peer, events)]

    def _refuse(self, remote_wwpn: int, rjt: bytes, reason: str) -> list[ResponderOutput]:
        self.refused += 1
        return [ElsAnswer(rjt), PeerRefused(remote_wwpn, reason)]

    def _events(self, wwpn: int, peer: _Peer, events: list) -> list[ResponderOutput]:
        out: list[ResponderOutput] = []
        for ev in events:
            if isinstance(ev, Send):
                out.append(ElsRequest(wwpn, wrap_ike(ev.data, peer.tid)))
            elif isinstance(ev, Established):
                out.append(PeerAuthenticated(wwpn))
                out += [RemoveSa(wwpn, i, o) for i, o in peer.replaced.items()]
                peer.replaced.clear()
            elif isinstance(ev, ChildSaEstablished):
                peer.children[ev.spi_in] = ev.spi_out
                out.append(InstallSa(wwpn, ev))
            elif isinstance(ev, Deleted):
                if ev.protocol == ProtocolId.IKE:
                    out += [RemoveSa(wwpn, i, o) for i, o in peer.children.items()]
                    peer.children.clear()
                elif ev.spi_in is not None and peer.children.pop(ev.spi_in, None) is not None:
                    out.append(RemoveSa(wwpn, ev.spi_in, ev.spi_out or 0))
            elif isinstance(ev, AuthFailed | NegotiationFailed):
                out.append(PeerAuthFailed(wwpn, ev.reason))
            elif isinstance(ev, ChildSaFailed) and not peer.children:
                out.append(PeerAuthFailed(wwpn, f"no child SA: {ev.reason}"))
        return out
