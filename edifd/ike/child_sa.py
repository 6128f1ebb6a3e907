"""The child SAs of one IKE SA: their table, SPI choice, key material, and the child-SA parts of IKE_AUTH
and CREATE_CHILD_SA (create and rekey). The IKE SA seals and sends what is built here; deletion is an
INFORMATIONAL exchange of the IKE SA and only removes entries from the table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .codes import NotifyType, ProtocolId, name_of
from .config import CipherSuite, IkeConfig
from .crypto import KeyExchange, Prf, child_keymat, split_child_keymat
from .errors import ParseError, StateError
from .events import ChildSaEstablished, ChildSaFailed
from .message import Message
from .outstanding import CreateChildRequest
from .payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
)
from .proposals import (
    ChildChoice,
    InvalidKe,
    check_child_choice,
    child_offer,
    choose_child,
    invalid_ke_notify,
)


@dataclass(frozen=True)
class ChildSaInfo:
    spi_in: int
    spi_out: int
    cipher: CipherSuite
    protocol: ProtocolId


@dataclass(frozen=True, kw_only=True)
class NewChild:
    """Everything that determines a new child SA pair: SPIs, nonces and PFS secret of the exchange that
    created it, and its narrowed selectors. we_initiated: we sent that exchange's request."""

    cipher: CipherSuite
    spi_in: bytes
    spi_out: bytes
    ni: bytes = field(repr=False)
    nr: bytes = field(repr=False)
    we_initiated: bool
    shared: bytes | None = field(default=None, repr=False)
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    rekeyed_spi_in: int | None = None
    transport_mode: bool = False


@dataclass(frozen=True)
class ChildAnswer:
    """Our response payloads to a peer's child SA request, and what became of the child."""

    payloads: tuple[Payload, ...]
    outcome: NewChild | ChildSaFailed | None  # None: refused without an event (CHILD_SA_NOT_FOUND, IKE rekey)


def spi_int(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


def narrow(
    offered: tuple[TrafficSelector, ...], ours: tuple[TrafficSelector, ...]
) -> tuple[TrafficSelector, ...]:
    """Each offered selector intersected with each of ours of the same type, without duplicates."""
    out: list[TrafficSelector] = []
    for a in offered:
        for b in ours:
            if type(a) is type(b):
                r = a.intersect(b)
                if r is not None and r not in out:
                    out.append(r)
    return tuple(out)


class ChildSas:
    """The child SA pairs of one IKE SA, keyed by our inbound SPI."""

    def __init__(self) -> None:
        self._by_spi_in: dict[int, ChildSaInfo] = {}

    def __len__(self) -> int:
        return len(self._by_spi_in)

    def all(self) -> tuple[ChildSaInfo, ...]:
        return tuple(self._by_spi_in.values())

    def get(self, spi_in: int) -> ChildSaInfo:
        if spi_in not in self._by_spi_in:
            raise StateError(f"no child SA with inbound SPI {spi_in:#010x}")
        return self._by_spi_in[spi_in]

    def by_spi_out(self, spi_out: bytes) -> ChildSaInfo | None:
        return next((c for c in self._by_spi_in.values() if c.spi_out == spi_int(spi_out)), None)

    def add(self, info: ChildSaInfo) -> None:
        self._by_spi_in[info.spi_in] = info

    def pop(self, spi_in: int) -> ChildSaInfo | None:
        return self._by_spi_in.pop(spi_in, None)

    def clear(self) -> None:
        self._by_spi_in.clear()

    def new_spi(self, rng: Callable[[int], bytes]) -> bytes:
        while True:
            spi = rng(4)
            if spi_int(spi) > 255 and spi_int(spi) not in self._by_spi_in:  # 0-255 are reserved (RFC 4303)
                return spi


# --- key material -------------------------------------------------------------------------------------------


def establish(
    config: IkeConfig, children: ChildSas, prf: Prf, sk_d: bytes, new: NewChild
) -> ChildSaEstablished:
    """Derive the pair's keys (RFC 7296 §2.17; i→r first) and add it to children."""
    km = child_keymat(prf, sk_d, new.ni, new.nr, new.cipher.key_len, new.shared)
    keys = split_child_keymat(km, new.cipher.key_len)
    i_to_r, r_to_i = (keys.i_to_r_key, keys.i_to_r_salt), (keys.r_to_i_key, keys.r_to_i_salt)
    (key_out, salt_out), (key_in, salt_in) = (i_to_r, r_to_i) if new.we_initiated else (r_to_i, i_to_r)
    info = ChildSaInfo(spi_int(new.spi_in), spi_int(new.spi_out), new.cipher, config.child_protocol)
    children.add(info)
    return ChildSaEstablished(
        spi_in=info.spi_in,
        spi_out=info.spi_out,
        cipher=new.cipher,
        key_in=key_in,
        salt_in=salt_in,
        key_out=key_out,
        salt_out=salt_out,
        protocol=config.child_protocol,
        local_ts=new.local_ts,
        remote_ts=new.remote_ts,
        rekeyed_spi_in=new.rekeyed_spi_in,
        transport_mode=new.transport_mode,
    )


# --- transport mode (ESP interop only) ----------------------------------------------------------------------


def transport_mode_wanted(config: IkeConfig) -> bool:
    return config.use_transport_mode and config.child_protocol == ProtocolId.ESP


def transport_mode(config: IkeConfig, msg: Message) -> bool:
    return transport_mode_wanted(config) and msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None


def _transport_notify(wanted: bool) -> list[Payload]:
    return [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] if wanted else []


# --- the first child, in IKE_AUTH ---------------------------------------------------------------------------


def first_offer(config: IkeConfig, spi: bytes) -> list[Payload]:
    """The child part of the initiator's IKE_AUTH request."""
    return [
        *_transport_notify(transport_mode_wanted(config)),
        child_offer(config, spi, None),
        TsiPayload(config.local_ts),
        TsrPayload(config.remote_ts),
    ]


def read_first_answer(
    config: IkeConfig, msg: Message, spi: bytes, ni: bytes, nr: bytes
) -> NewChild | ChildSaFailed:
    """The child part of the responder's IKE_AUTH response."""
    err = msg.error_notify()
    sa, tsi, tsr = msg.first(SaPayload), msg.first(TsiPayload), msg.first(TsrPayload)
    if err is not None or sa is None or tsi is None or tsr is None:
        return ChildSaFailed(name_of(NotifyType, err) if err else "responder created no child SA")
    try:
        choice = check_child_choice(config, sa, None)
    except ParseError as e:
        return ChildSaFailed(str(e))
    return NewChild(
        cipher=choice.cipher,
        spi_in=spi,
        spi_out=choice.proposal.spi,
        ni=ni,
        nr=nr,
        we_initiated=True,
        local_ts=tsi.selectors,
        remote_ts=tsr.selectors,
        transport_mode=transport_mode(config, msg),
    )


def answer_first(config: IkeConfig, children: ChildSas, msg: Message, ni: bytes, nr: bytes) -> ChildAnswer:
    """The child part of the responder's IKE_AUTH response (missing TS: TS_UNACCEPTABLE)."""
    choice = choose_child(config, msg.first(SaPayload), None, with_ke=False)
    tsi, tsr = msg.first(TsiPayload), msg.first(TsrPayload)
    ts_i = narrow(tsi.selectors, config.remote_ts) if tsi else ()
    ts_r = narrow(tsr.selectors, config.local_ts) if tsr else ()
    if not isinstance(choice, ChildChoice):
        return _refuse(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), "NO_PROPOSAL_CHOSEN")
    if not ts_i or not ts_r:
        return _refuse(NotifyPayload(NotifyType.TS_UNACCEPTABLE), "TS_UNACCEPTABLE")
    spi = children.new_spi(config.rng)
    transport = transport_mode(config, msg)
    payloads = (
        *_transport_notify(transport),
        SaPayload((choice.answer(spi),)),
        TsiPayload(ts_i),
        TsrPayload(ts_r),
    )
    new = NewChild(
        cipher=choice.cipher,
        spi_in=spi,
        spi_out=choice.proposal.spi,
        ni=ni,
        nr=nr,
        we_initiated=False,
        local_ts=ts_r,
        remote_ts=ts_i,
        transport_mode=transport,
    )
    return ChildAnswer(payloads, new)


# --- CREATE_CHILD_SA ----------------------------------------------------------------------------------------


def create_offer(config: IkeConfig, req: CreateChildRequest, rekeyed: ChildSaInfo | None) -> list[Payload]:
    """A CREATE_CHILD_SA request: a new child, or with N(REKEY_SA) a rekey of the child rekeyed."""
    payloads: list[Payload] = []
    if rekeyed is not None:
        spi = rekeyed.spi_in.to_bytes(4, "big")
        payloads.append(NotifyPayload(NotifyType.REKEY_SA, rekeyed.protocol, spi))
    payloads += _transport_notify(transport_mode_wanted(config))
    payloads += [child_offer(config, req.spi, req.group), NoncePayload(req.ni)]
    if req.ke is not None:
        payloads.append(KePayload(req.ke.group, req.ke.public))
    payloads += [TsiPayload(config.local_ts), TsrPayload(config.remote_ts)]
    return payloads


def read_create_answer(config: IkeConfig, req: CreateChildRequest, msg: Message) -> NewChild:
    """A successful CREATE_CHILD_SA response (error notifies are the caller's to handle)."""
    sa, nr = msg.first(SaPayload), msg.first(NoncePayload)
    tsi, tsr = msg.first(TsiPayload), msg.first(TsrPayload)
    if sa is None or nr is None or tsi is None or tsr is None:
        raise ParseError("CREATE_CHILD_SA response lacks SA, Nonce or TS")
    choice = check_child_choice(config, sa, req.group)
    shared = None
    if req.ke is not None:
        ke = msg.first(KePayload)
        if ke is None or ke.group != req.group:
            raise ParseError("CREATE_CHILD_SA response lacks the KE payload for PFS")
        shared = req.ke.shared(ke.data)
    return NewChild(
        cipher=choice.cipher,
        spi_in=req.spi,
        spi_out=choice.proposal.spi,
        ni=req.ni,
        nr=nr.data,
        we_initiated=True,
        shared=shared,
        local_ts=tsi.selectors,
        remote_ts=tsr.selectors,
        rekeyed_spi_in=req.rekey,
        transport_mode=transport_mode(config, msg),
    )


def answer_create(config: IkeConfig, children: ChildSas, msg: Message) -> ChildAnswer:
    """Our response to a peer's CREATE_CHILD_SA request for a child SA (new or rekey)."""
    sa = msg.first(SaPayload)
    if sa is not None and any(p.protocol == ProtocolId.IKE for p in sa.proposals):
        # IKE SA rekeying is not implemented: refuse cleanly, the peer keeps the current IKE SA.
        return ChildAnswer((NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN),), None)
    rekey = msg.notify(NotifyType.REKEY_SA)
    rekeyed = None
    if rekey is not None:
        old = children.by_spi_out(rekey.spi)
        if old is None:
            return ChildAnswer(
                (NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, rekey.protocol, rekey.spi),), None
            )
        rekeyed = old.spi_in
    ni, tsi, tsr = msg.first(NoncePayload), msg.first(TsiPayload), msg.first(TsrPayload)
    ke = msg.first(KePayload)
    if ni is None or tsi is None or tsr is None:
        raise ParseError("CREATE_CHILD_SA request lacks Nonce or TS")
    choice = choose_child(config, sa, ke.group if ke else None, with_ke=True)
    if isinstance(choice, InvalidKe):
        return _refuse(invalid_ke_notify(choice.group), "INVALID_KE_PAYLOAD")
    if choice is None:
        return _refuse(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), "NO_PROPOSAL_CHOSEN")
    ts_i, ts_r = narrow(tsi.selectors, config.remote_ts), narrow(tsr.selectors, config.local_ts)
    if not ts_i or not ts_r:
        return _refuse(NotifyPayload(NotifyType.TS_UNACCEPTABLE), "TS_UNACCEPTABLE")
    shared, our_ke = None, None
    if choice.group is not None:
        assert ke is not None  # choose_child takes a PFS group only from the peer's KE
        our_ke = KeyExchange(choice.group, config.rng(KeyExchange.private_size(choice.group)))
        shared = our_ke.shared(ke.data)
    spi = children.new_spi(config.rng)
    nr = config.rng(config.nonce_len)
    transport = transport_mode(config, msg)
    payloads = [*_transport_notify(transport), SaPayload((choice.answer(spi),)), NoncePayload(nr)]
    if our_ke is not None:
        payloads.append(KePayload(our_ke.group, our_ke.public))
    payloads += [TsiPayload(ts_i), TsrPayload(ts_r)]
    new = NewChild(
        cipher=choice.cipher,
        spi_in=spi,
        spi_out=choice.proposal.spi,
        ni=ni.data,
        nr=nr,
        we_initiated=False,
        shared=shared,
        local_ts=ts_r,
        remote_ts=ts_i,
        rekeyed_spi_in=rekeyed,
        transport_mode=transport,
    )
    return ChildAnswer(tuple(payloads), new)


def _refuse(notify: NotifyPayload, reason: str) -> ChildAnswer:
    return ChildAnswer((notify,), ChildSaFailed(reason))
