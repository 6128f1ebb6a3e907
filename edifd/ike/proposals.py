"""SA proposals: what we offer, how a responder chooses among the peer's offers, and the check that a
responder chose only what we offered (RFC 7296 §2.7, §3.3). AEAD transforms only, ESN none."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .codes import DhGroup, EsnId, NotifyType, ProtocolId, TransformType
from .config import CipherSuite, IkeConfig
from .errors import ParseError
from .message import Message
from .payloads import NotifyPayload, Proposal, SaPayload, Transform


@dataclass(frozen=True)
class IkeChoice:
    """The transforms of the IKE SA, taken from one proposal."""

    proposal: Proposal
    cipher: CipherSuite
    prf: int
    group: int

    def answer(self) -> Proposal:
        """The responder's SA payload proposal: exactly the chosen transforms."""
        return Proposal(
            self.proposal.number,
            ProtocolId.IKE,
            b"",
            (
                Transform(TransformType.ENCR, self.cipher.encr, self.cipher.key_bits),
                Transform(TransformType.PRF, self.prf),
                Transform(TransformType.KE, self.group),
            ),
        )


@dataclass(frozen=True)
class ChildChoice:
    """The transforms of a child SA, taken from one proposal (group: the PFS group, if any)."""

    proposal: Proposal
    cipher: CipherSuite
    group: DhGroup | None

    def answer(self, spi: bytes) -> Proposal:
        """The responder's SA payload proposal, carrying the responder's inbound SPI."""
        ts = [Transform(TransformType.ENCR, self.cipher.encr, self.cipher.key_bits)]
        if self.group is not None:
            ts.append(Transform(TransformType.KE, self.group))
        ts.append(Transform(TransformType.ESN, EsnId.NO))
        return Proposal(self.proposal.number, self.proposal.protocol, spi, tuple(ts))


@dataclass(frozen=True)
class InvalidKe:
    """A proposal is acceptable, but with another DH group than the peer's KE payload used."""

    group: int


# --- what we offer ------------------------------------------------------------------------------------------


def ike_offer(config: IkeConfig) -> SaPayload:
    ts = [Transform(TransformType.ENCR, s.encr, s.key_bits) for s in config.ike_ciphers]
    ts += [Transform(TransformType.PRF, p) for p in config.prfs]
    ts += [Transform(TransformType.KE, g) for g in config.dh_groups]
    return SaPayload((Proposal(1, ProtocolId.IKE, b"", tuple(ts)),))


def child_offer(config: IkeConfig, spi: bytes, group: DhGroup | None) -> SaPayload:
    ts = [Transform(TransformType.ENCR, s.encr, s.key_bits) for s in config.child_ciphers]
    if group:
        ts.append(Transform(TransformType.KE, group))
    ts.append(Transform(TransformType.ESN, EsnId.NO))
    return SaPayload((Proposal(1, config.child_protocol, spi, tuple(ts)),))


# --- choosing from the peer's offer (responder) -------------------------------------------------------------


def pick_cipher(proposal: Proposal, allowed: tuple[CipherSuite, ...]) -> CipherSuite | None:
    for t in proposal.of_type(TransformType.ENCR):
        if not t.unknown_attributes and t.key_length is not None:
            suite = next((s for s in allowed if s.encr == t.id and s.key_bits == t.key_length), None)
            if suite:
                return suite
    return None


def choose_ike(config: IkeConfig, sa: SaPayload, ke_group: int) -> IkeChoice | InvalidKe | None:
    """The first acceptable IKE proposal whose groups include the peer's KE group; else the group to ask
    for with INVALID_KE_PAYLOAD; None if nothing is acceptable."""
    fallback_group = None
    for p in sa.proposals:
        if p.protocol != ProtocolId.IKE or p.spi or any(t.unknown_attributes for t in p.transforms):
            continue
        if [t for t in p.of_type(TransformType.INTEG) if t.id != 0]:
            continue  # non-AEAD proposals are not supported
        cipher = pick_cipher(p, config.ike_ciphers)
        prf = next((t.id for t in p.of_type(TransformType.PRF) if t.id in config.prfs), None)
        groups = [t.id for t in p.of_type(TransformType.KE) if t.id in config.dh_groups]
        if cipher is None or prf is None or not groups:
            continue
        if ke_group in groups:
            return IkeChoice(p, cipher, prf, ke_group)
        fallback_group = fallback_group or groups[0]
    return InvalidKe(fallback_group) if fallback_group is not None else None


def choose_child(
    config: IkeConfig, sa: SaPayload | None, ke_group: int | None, with_ke: bool
) -> ChildChoice | InvalidKe | None:
    """The first acceptable child proposal (None: NO_PROPOSAL_CHOSEN). with_ke: a CREATE_CHILD_SA, where
    the proposal may carry a PFS group (and must, if we require PFS)."""
    if sa is None:
        return None
    want_pfs = config.child_pfs_group is not None and with_ke
    for p in sa.proposals:
        if p.protocol != config.child_protocol or len(p.spi) != 4:
            continue
        if any(t.unknown_attributes for t in p.transforms) or p.of_type(TransformType.INTEG):
            continue
        cipher = pick_cipher(p, config.child_ciphers)
        if cipher is None or EsnId.NO not in [t.id for t in p.of_type(TransformType.ESN)]:
            continue
        group = None
        kes = [t.id for t in p.of_type(TransformType.KE) if t.id != DhGroup.NONE]
        if with_ke and kes:
            usable = [g for g in kes if g in config.dh_groups]
            if not usable:
                continue
            if ke_group not in usable:
                return InvalidKe(usable[0])
            group = DhGroup(ke_group)
        elif want_pfs:
            continue
        return ChildChoice(p, cipher, group)
    return None


# --- checking the responder's choice (initiator) ------------------------------------------------------------


def check_ike_choice(config: IkeConfig, sa: SaPayload) -> IkeChoice:
    if len(sa.proposals) != 1 or sa.proposals[0].protocol != ProtocolId.IKE:
        raise ParseError("IKE_SA_INIT response must select exactly one IKE proposal")
    p = sa.proposals[0]
    cipher = pick_cipher(p, config.ike_ciphers)
    prfs = [t.id for t in p.of_type(TransformType.PRF)]
    kes = [t.id for t in p.of_type(TransformType.KE)]
    if (
        cipher is None
        or len(prfs) != 1
        or prfs[0] not in config.prfs
        or len(kes) != 1
        or kes[0] not in config.dh_groups
        or p.of_type(TransformType.INTEG)
    ):
        raise ParseError("responder selected transforms we did not offer")
    return IkeChoice(p, cipher, prfs[0], kes[0])


def check_child_choice(config: IkeConfig, sa: SaPayload, offered_group: DhGroup | None) -> ChildChoice:
    if len(sa.proposals) != 1:
        raise ParseError("child SA response must carry exactly one proposal")
    p = sa.proposals[0]
    if p.protocol != config.child_protocol or len(p.spi) != 4:
        raise ParseError("child SA response has the wrong protocol or SPI size")
    cipher = pick_cipher(p, config.child_ciphers)
    if cipher is None:
        raise ParseError("child SA response selected a cipher we did not offer")
    kes = [t.id for t in p.of_type(TransformType.KE) if t.id != DhGroup.NONE]
    if kes and (offered_group is None or kes != [offered_group]):
        raise ParseError("child SA response selected a DH group we did not offer")
    return ChildChoice(p, cipher, offered_group if kes else None)


def requested_group(msg: Message) -> int | None:
    """The DH group a peer's N(INVALID_KE_PAYLOAD) asks for, if it names one."""
    n = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
    return struct.unpack(">H", n.data[:2])[0] if n is not None and len(n.data) >= 2 else None


def invalid_ke_notify(group: int) -> NotifyPayload:
    """The N(INVALID_KE_PAYLOAD) that asks the peer for group."""
    return NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=struct.pack(">H", group))
