"""Sans-IO IKEv2 state machines for one IKE SA: `Initiator` and `Responder`.

Bytes in, events out. No sockets, timers or clocks: the caller moves `Send.data` over its transport
(AUTH_ELS or UDP) and decides when to call `retransmit()`. Randomness and the certificate-validation clock
come from the configuration so that tests can make a run reproducible.

Window size 1 (RFC 7296 §2.3): one outstanding request per direction. A request that repeats the last one is
answered with the cached response. Anything malformed, unauthenticated or unexpected raises `IkeError`
and leaves the session unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import auth as ikeauth
from .codes import (
    AuthMethod,
    CertEncoding,
    DhGroup,
    EsnId,
    ExchangeType,
    IdType,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
    name_of,
)
from .config import CipherSuite, Identity, IkeConfig
from .crypto import (
    ICV_LEN,
    SALT_LEN,
    IkeKeys,
    KeyExchange,
    Prf,
    SkAead,
    child_keymat,
    derive_ike_keys,
    skeyseed,
    split_child_keymat,
)
from .errors import IkeError, ParseError, StateError
from .message import Message, decode_header, encode_plain, encode_protected, open_message
from .payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    IdiPayload,
    IdPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    Transform,
    TsiPayload,
    TsrPayload,
    UnknownPayload,
)

# --- events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Transmit this IKE message (without transport framing)."""

    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Send({len(self.data)} bytes)"


@dataclass(frozen=True)
class Established:
    spi_i: bytes
    spi_r: bytes
    local_id: Identity
    remote_id: Identity
    cipher: CipherSuite
    prf: PrfId
    dh_group: DhGroup


@dataclass(frozen=True)
class ChildSaEstablished:
    """A pair of unidirectional SAs, ready for sa_update(). Keys and salts are hidden from repr."""

    spi_in: int
    spi_out: int
    cipher: CipherSuite
    key_in: bytes = field(repr=False)
    salt_in: bytes = field(repr=False)
    key_out: bytes = field(repr=False)
    salt_out: bytes = field(repr=False)
    protocol: ProtocolId = ProtocolId.FC_ESP_HEADER
    local_ts: tuple = ()
    remote_ts: tuple = ()
    rekeyed_spi_in: int | None = None  # the child this one replaces (the caller deletes it after the switch)
    transport_mode: bool = False


@dataclass(frozen=True)
class ChildSaFailed:
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True)
class NegotiationFailed:
    """IKE_SA_INIT failed (no acceptable proposal, or the peer refused ours)."""

    reason: str


@dataclass(frozen=True)
class Deleted:
    """The IKE SA (protocol IKE, no SPIs) or a child SA pair was deleted."""

    protocol: ProtocolId
    spi_in: int | None = None
    spi_out: int | None = None


@dataclass(frozen=True)
class PeerAlive:
    """Our liveness check (empty INFORMATIONAL) was answered."""


Event = (
    Send
    | Established
    | ChildSaEstablished
    | ChildSaFailed
    | AuthFailed
    | NegotiationFailed
    | Deleted
    | PeerAlive
)


class State(Enum):
    IDLE = "idle"
    INIT_SENT = "init_sent"
    INIT_DONE = "init_done"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    AUTH_SENT = "auth_sent"
    ESTABLISHED = "established"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class ChildSaInfo:
    spi_in: int
    spi_out: int
    cipher: CipherSuite
    protocol: ProtocolId


@dataclass
class _Pending:
    message_id: int
    exchange: ExchangeType
    data: bytes = field(repr=False)
    kind: str
    context: dict = field(default_factory=dict, repr=False)


def _spi_int(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


def _error_notify(msg: Message) -> int | None:
    for n in msg.find(NotifyPayload):
        if NotifyType.is_error(n.notify_type):
            return n.notify_type
    return None


def _notify(msg: Message, ntype: NotifyType) -> NotifyPayload | None:
    return next((n for n in msg.find(NotifyPayload) if n.notify_type == ntype), None)


def _intersect_all(offered: tuple, ours: tuple) -> tuple:
    out = []
    for a in offered:
        for b in ours:
            if type(a) is type(b):
                r = a.intersect(b)
                if r is not None and r not in out:
                    out.append(r)
    return tuple(out)


# --- the common IKE SA --------------------------------------------------------------------------------------


class _IkeSa:
    original_initiator = False

    def __init__(self, config: IkeConfig) -> None:
        self.config = config
        self.state = State.IDLE
        self.spi_i = bytes(8)
        self.spi_r = bytes(8)
        self._prf: Prf | None = None
        self._cipher: CipherSuite | None = None
        self._group: DhGroup | None = None
        self._keys: IkeKeys | None = None
        self._shared: bytes | None = None
        self._aead_in: SkAead | None = None
        self._aead_out: SkAead | None = None
        self._iv = 0
        self._next_mid = 0  # our next request
        self._peer_mid = 0  # the peer's next request
        self._pending: _Pending | None = None
        self._last_request: bytes | None = None  # the peer's last request and our cached response
        self._last_response: bytes | None = None
        self._children: dict[int, ChildSaInfo] = {}
        self._peer_hashes: tuple[int, ...] = ()
        self._ni = b""
        self._nr = b""
        self._remote_id: Identity | None = None
        self._first_child_keymat = b""
        self._final_mid: int | None = None  # message ID of our AUTHENTICATION_FAILED notice

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(state={self.state.value}, spi_i={self.spi_i.hex()}, "
            f"spi_r={self.spi_r.hex()}, children={len(self._children)})"
        )

    # -- public API common to both roles --

    @property
    def children(self) -> tuple[ChildSaInfo, ...]:
        return tuple(self._children.values())

    def retransmit(self) -> bytes | None:
        """The outstanding request, unchanged, for the caller's retransmission timer (or None)."""
        return self._pending.data if self._pending else None

    def ping(self) -> bytes:
        """Liveness check: an empty INFORMATIONAL request; answered by `PeerAlive`."""
        return self._request(ExchangeType.INFORMATIONAL, [], "ping")

    def delete(self) -> bytes:
        """Delete the IKE SA (and with it every child): INFORMATIONAL D(IKE)."""
        return self._request(ExchangeType.INFORMATIONAL, [DeletePayload(ProtocolId.IKE)], "delete_ike")

    def delete_child(self, spi_in: int) -> bytes:
        """Delete a child SA pair, named by our inbound SPI."""
        child = self._child(spi_in)
        d = DeletePayload(child.protocol, (spi_in.to_bytes(4, "big"),))
        return self._request(ExchangeType.INFORMATIONAL, [d], "delete_child", spi_in=spi_in)

    def rekey_child(self, spi_in: int) -> bytes:
        """CREATE_CHILD_SA rekeying the child with inbound SPI spi_in (KE if child_pfs_group is set)."""
        self._child(spi_in)
        return self._create_child_request(rekey=spi_in, group=self.config.child_pfs_group)

    def create_child(self) -> bytes:
        """CREATE_CHILD_SA for an additional child SA pair."""
        return self._create_child_request(rekey=None, group=self.config.child_pfs_group)

    def export_key_material(self) -> dict[str, bytes]:
        """Key material for interop verification only (like charon's key log). Never log or display it."""
        if self._keys is None:
            return {}
        k = self._keys
        out = {
            "shared": self._shared or b"",
            "skeyseed": k.skeyseed,
            "sk_d": k.sk_d,
            "sk_ei": k.sk_ei,
            "sk_er": k.sk_er,
            "sk_pi": k.sk_pi,
            "sk_pr": k.sk_pr,
        }
        if self._first_child_keymat:
            half = len(self._first_child_keymat) // 2
            out["child_i"], out["child_r"] = self._first_child_keymat[:half], self._first_child_keymat[half:]
        return out

    def receive(self, data: bytes) -> list[Event]:
        """Feed one received IKE message (transport framing removed)."""
        data = bytes(data)
        hdr = decode_header(data)
        if self.state in (State.FAILED, State.DELETED):
            if hdr.is_response and hdr.message_id == self._final_mid and hdr.spi_i == self.spi_i:
                self._final_mid = None  # the answer to our failure notice: nothing left to do
                return []
            raise StateError(f"IKE SA is {self.state.value}")
        if hdr.from_original_initiator == self.original_initiator:
            raise StateError("message has the wrong Initiator flag")
        if (
            hdr.exchange in (ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH)
            and self.state != State.ESTABLISHED
        ):
            return self._handshake(hdr, data)
        if self.state != State.ESTABLISHED:
            raise StateError(f"exchange {name_of(ExchangeType, hdr.exchange)} in state {self.state.value}")
        if hdr.spi_i != self.spi_i or hdr.spi_r != self.spi_r:
            raise StateError("message for another IKE SA")
        if hdr.is_response:
            p = self._pending
            if p is None or hdr.message_id != p.message_id or hdr.exchange != p.exchange:
                raise StateError("response does not match the outstanding request")
            msg = open_message(data, self._aead_in)
            self._pending = None
            try:
                return self._on_response(p, msg)
            except IkeError:
                self._pending = p
                raise
        if self._last_request == data and self._last_response is not None:
            return [Send(self._last_response)]
        if hdr.message_id != self._peer_mid:
            raise StateError(f"request message ID {hdr.message_id}, expected {self._peer_mid}")
        msg = open_message(data, self._aead_in)
        events = self._on_request(msg)
        self._peer_mid += 1
        self._last_request = data
        self._last_response = next(e.data for e in events if isinstance(e, Send))
        return events

    # -- building messages --

    def _msg(self, exchange: int, mid: int, response: bool, payloads: list) -> Message:
        return Message(
            self.spi_i, self.spi_r, exchange, mid, response, self.original_initiator, tuple(payloads)
        )

    def _check_size(self, data: bytes) -> bytes:
        limit = self.config.max_message
        if limit is not None and len(data) > limit:
            raise IkeError(
                f"IKE message of {len(data)} bytes does not fit one AUTH_ELS frame ({limit} bytes)"
            )
        return data

    def _plain(self, exchange: int, mid: int, response: bool, payloads: list) -> bytes:
        return self._check_size(encode_plain(self._msg(exchange, mid, response, payloads)))

    def _seal(self, exchange: int, mid: int, response: bool, payloads: list) -> bytes:
        # A per-direction counter is a unique IV under SK_e, as RFC 5282 §3.1 requires.
        self._iv += 1
        iv = self._iv.to_bytes(8, "big")
        return self._check_size(
            encode_protected(self._msg(exchange, mid, response, payloads), self._aead_out, iv)
        )

    def _request(self, exchange: ExchangeType, payloads: list, kind: str, **context) -> bytes:
        if self.state != State.ESTABLISHED:
            raise StateError(f"IKE SA is {self.state.value}, not established")
        if self._pending is not None:
            raise StateError("a request is already outstanding (window size 1)")
        data = self._seal(exchange, self._next_mid, False, payloads)
        self._pending = _Pending(self._next_mid, exchange, data, kind, context)
        self._next_mid += 1
        return data

    def _respond(self, msg: Message, payloads: list) -> Send:
        return Send(self._seal(msg.exchange, msg.message_id, True, payloads))

    def _child(self, spi_in: int) -> ChildSaInfo:
        if spi_in not in self._children:
            raise StateError(f"no child SA with inbound SPI {spi_in:#010x}")
        return self._children[spi_in]

    def _new_child_spi(self) -> bytes:
        while True:
            spi = self.config.rng(4)
            if _spi_int(spi) > 255 and _spi_int(spi) not in self._children:  # 0-255 are reserved (RFC 4303)
                return spi

    # -- proposals --

    def _ike_proposal(self) -> SaPayload:
        c = self.config
        ts = [Transform(TransformType.ENCR, s.encr, s.key_bits) for s in c.ike_ciphers]
        ts += [Transform(TransformType.PRF, p) for p in c.prfs]
        ts += [Transform(TransformType.KE, g) for g in c.dh_groups]
        return SaPayload((Proposal(1, ProtocolId.IKE, b"", tuple(ts)),))

    def _child_proposal(self, spi: bytes, group: DhGroup | None) -> SaPayload:
        c = self.config
        ts = [Transform(TransformType.ENCR, s.encr, s.key_bits) for s in c.child_ciphers]
        if group:
            ts.append(Transform(TransformType.KE, group))
        ts.append(Transform(TransformType.ESN, EsnId.NO))
        return SaPayload((Proposal(1, c.child_protocol, spi, tuple(ts)),))

    def _pick_cipher(self, proposal: Proposal, allowed: tuple[CipherSuite, ...]) -> CipherSuite | None:
        for t in proposal.of_type(TransformType.ENCR):
            if not t.unknown_attributes and t.key_length is not None:
                suite = next((s for s in allowed if s.encr == t.id and s.key_bits == t.key_length), None)
                if suite:
                    return suite
        return None

    def _select_child(self, sa: SaPayload | None, ke_group: int | None, with_ke: bool):
        """Pick (proposal, cipher, group) from the peer's child SA payload, or return (None, reason)."""
        if sa is None:
            return None, NotifyType.NO_PROPOSAL_CHOSEN
        want_pfs = self.config.child_pfs_group is not None and with_ke
        for p in sa.proposals:
            if p.protocol != self.config.child_protocol or len(p.spi) != 4:
                continue
            if any(t.unknown_attributes for t in p.transforms) or p.of_type(TransformType.INTEG):
                continue
            cipher = self._pick_cipher(p, self.config.child_ciphers)
            if cipher is None or EsnId.NO not in [t.id for t in p.of_type(TransformType.ESN)]:
                continue
            group = None
            kes = [t.id for t in p.of_type(TransformType.KE) if t.id != DhGroup.NONE]
            if with_ke and kes:
                usable = [g for g in kes if g in self.config.dh_groups]
                if not usable:
                    continue
                if ke_group not in usable:
                    return None, (NotifyType.INVALID_KE_PAYLOAD, usable[0])
                group = DhGroup(ke_group)
            elif want_pfs:
                continue
            return (p, cipher, group), None
        return None, NotifyType.NO_PROPOSAL_CHOSEN

    def _check_child_response(self, sa: SaPayload, offered_group: DhGroup | None):
        if len(sa.proposals) != 1:
            raise ParseError("child SA response must carry exactly one proposal")
        p = sa.proposals[0]
        if p.protocol != self.config.child_protocol or len(p.spi) != 4:
            raise ParseError("child SA response has the wrong protocol or SPI size")
        cipher = self._pick_cipher(p, self.config.child_ciphers)
        if cipher is None:
            raise ParseError("child SA response selected a cipher we did not offer")
        kes = [t.id for t in p.of_type(TransformType.KE) if t.id != DhGroup.NONE]
        if kes and (offered_group is None or kes != [offered_group]):
            raise ParseError("child SA response selected a DH group we did not offer")
        return p, cipher

    # -- keys --

    def _derive(self, shared: bytes) -> None:
        assert self._prf is not None and self._cipher is not None
        seed = skeyseed(self._prf, self._ni, self._nr, shared)
        enc_len = self._cipher.key_len + SALT_LEN
        self._keys = derive_ike_keys(self._prf, seed, self._ni, self._nr, self.spi_i, self.spi_r, enc_len)
        self._shared = shared
        icv = ICV_LEN[self._cipher.encr]
        ei, er = SkAead(self._keys.sk_ei, icv), SkAead(self._keys.sk_er, icv)
        self._aead_out, self._aead_in = (ei, er) if self.original_initiator else (er, ei)

    def _child_event(
        self,
        cipher: CipherSuite,
        spi_in: bytes,
        spi_out: bytes,
        ni: bytes,
        nr: bytes,
        we_initiated: bool,
        shared: bytes | None,
        local_ts: tuple,
        remote_ts: tuple,
        rekeyed: int | None,
        transport: bool,
    ) -> ChildSaEstablished:
        assert self._prf is not None and self._keys is not None
        km = child_keymat(self._prf, self._keys.sk_d, ni, nr, cipher.key_len, shared)
        keys = split_child_keymat(km, cipher.key_len)
        if we_initiated:
            key_out, salt_out, key_in, salt_in = (
                keys.i_to_r_key,
                keys.i_to_r_salt,
                keys.r_to_i_key,
                keys.r_to_i_salt,
            )
        else:
            key_in, salt_in, key_out, salt_out = (
                keys.i_to_r_key,
                keys.i_to_r_salt,
                keys.r_to_i_key,
                keys.r_to_i_salt,
            )
        info = ChildSaInfo(_spi_int(spi_in), _spi_int(spi_out), cipher, self.config.child_protocol)
        self._children[info.spi_in] = info
        return ChildSaEstablished(
            info.spi_in,
            info.spi_out,
            cipher,
            key_in,
            salt_in,
            key_out,
            salt_out,
            self.config.child_protocol,
            local_ts,
            remote_ts,
            rekeyed,
            transport,
        )

    # -- authentication --

    def _auth_payloads(
        self, real_message: bytes, peer_nonce: bytes, sk_p: bytes, id_payload: IdPayload
    ) -> list:
        assert self._prf is not None
        octets = ikeauth.signed_octets(real_message, peer_nonce, self._prf, sk_p, id_payload.encode_body())
        c = self.config
        if c.psk is not None:
            return [AuthPayload(AuthMethod.PSK, ikeauth.psk_auth(self._prf, c.psk, octets))]
        method, data = ikeauth.sign(c.private_key, octets, self._peer_hashes)
        der = serialization.Encoding.DER
        certs = [CertPayload(CertEncoding.X509_SIGNATURE, c.certificate.public_bytes(der))]
        certs += [CertPayload(CertEncoding.X509_SIGNATURE, i.public_bytes(der)) for i in c.intermediates]
        return certs + [AuthPayload(method, data)]

    def _verify_peer(
        self, msg: Message, id_payload: IdPayload | None, real_message: bytes, our_nonce: bytes, sk_p: bytes
    ) -> Identity:
        """Check the peer's identity and AUTH; return that identity or raise AuthenticationError."""
        assert self._prf is not None
        auth = msg.first(AuthPayload)
        if id_payload is None or auth is None:
            raise ikeauth.AuthenticationError("ID or AUTH payload missing")
        try:
            peer = Identity(IdType(id_payload.id_type), id_payload.data)
        except ValueError:
            raise ikeauth.AuthenticationError(f"unsupported ID type {id_payload.id_type}") from None
        c = self.config
        if c.remote_id is not None and peer != c.remote_id:
            raise ikeauth.AuthenticationError(f"peer identity {peer} is not the configured {c.remote_id}")
        octets = ikeauth.signed_octets(real_message, our_nonce, self._prf, sk_p, id_payload.encode_body())
        if c.psk is not None:
            if auth.method != AuthMethod.PSK:
                raise ikeauth.AuthenticationError(f"expected PSK AUTH, got method {auth.method}")
            ikeauth.verify_psk(self._prf, c.psk, octets, auth.data)
            return peer
        if auth.method not in (AuthMethod.DIGITAL_SIGNATURE, AuthMethod.ECDSA_SHA256_P256):
            raise ikeauth.AuthenticationError(f"expected a signature AUTH, got method {auth.method}")
        certs = [p for p in msg.find(CertPayload) if not isinstance(p, CertReqPayload)]
        if not certs or certs[0].encoding != CertEncoding.X509_SIGNATURE:
            raise ikeauth.AuthenticationError("peer sent no X.509 certificate")
        try:
            parsed = [
                x509.load_der_x509_certificate(p.data)
                for p in certs
                if p.encoding == CertEncoding.X509_SIGNATURE
            ]
        except ValueError:
            raise ikeauth.AuthenticationError("peer certificate is not valid DER") from None
        ikeauth.validate_chain(parsed[0], parsed[1:], c.ca_certificates, c.clock())
        if not ikeauth.identity_matches(parsed[0], peer.id_type, peer.data):
            raise ikeauth.AuthenticationError(f"peer certificate does not vouch for identity {peer}")
        ikeauth.verify_signature(parsed[0].public_key(), auth.method, auth.data, octets)
        return peer

    def _hash_notify(self) -> list:
        if self.config.psk is not None:
            return []
        data = b"".join(struct.pack(">H", h) for h in ikeauth.SUPPORTED_HASHES)
        return [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=data)]

    def _learn_peer_hashes(self, msg: Message) -> None:
        n = _notify(msg, NotifyType.SIGNATURE_HASH_ALGORITHMS)
        if n is not None:
            self._peer_hashes = tuple(struct.unpack(f">{len(n.data) // 2}H", n.data[: len(n.data) // 2 * 2]))

    def _certreq(self) -> list:
        if self.config.psk is not None:
            return []
        return [
            CertReqPayload(
                CertEncoding.X509_SIGNATURE,
                b"".join(ikeauth.ca_keyid(ca) for ca in self.config.ca_certificates),
            )
        ]

    def _transport_mode(self, msg: Message) -> bool:
        return (
            self.config.use_transport_mode
            and self.config.child_protocol == ProtocolId.ESP
            and _notify(msg, NotifyType.USE_TRANSPORT_MODE) is not None
        )

    def _established_event(self) -> Established:
        assert self._remote_id and self._cipher and self._prf and self._group
        return Established(
            self.spi_i,
            self.spi_r,
            self.config.local_id,
            self._remote_id,
            self._cipher,
            self._prf.id,
            self._group,
        )

    # -- exchanges after IKE_AUTH (either side may start them) --

    def _create_child_request(self, rekey: int | None, group: DhGroup | None) -> bytes:
        if self.state != State.ESTABLISHED:
            raise StateError("IKE SA not established")
        spi = self._new_child_spi()
        ni = self.config.rng(self.config.nonce_len)
        payloads: list = []
        if rekey is not None:
            child = self._child(rekey)
            payloads.append(NotifyPayload(NotifyType.REKEY_SA, child.protocol, rekey.to_bytes(4, "big")))
        if self._transport_mode_wanted():
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        payloads += [self._child_proposal(spi, group), NoncePayload(ni)]
        ke = None
        if group:
            ke = KeyExchange(group, self.config.rng(KeyExchange.private_size(group)))
            payloads.append(KePayload(group, ke.public))
        payloads += [TsiPayload(self.config.local_ts), TsrPayload(self.config.remote_ts)]
        return self._request(
            ExchangeType.CREATE_CHILD_SA,
            payloads,
            "create_child",
            spi=spi,
            ni=ni,
            ke=ke,
            group=group,
            rekey=rekey,
        )

    def _transport_mode_wanted(self) -> bool:
        return self.config.use_transport_mode and self.config.child_protocol == ProtocolId.ESP

    def _on_response(self, p: _Pending, msg: Message) -> list[Event]:
        if p.kind == "ping":
            return [PeerAlive()]
        if p.kind == "delete_ike":
            self.state = State.DELETED
            self._children.clear()
            return [Deleted(ProtocolId.IKE)]
        if p.kind == "delete_child":
            child = self._children.pop(p.context["spi_in"], None)
            return [Deleted(child.protocol, child.spi_in, child.spi_out)] if child else []
        return self._on_create_child_response(p, msg)

    def _on_create_child_response(self, p: _Pending, msg: Message) -> list[Event]:
        ctx = p.context
        err = _error_notify(msg)
        if err == NotifyType.INVALID_KE_PAYLOAD and ctx["group"] is not None:
            n = _notify(msg, NotifyType.INVALID_KE_PAYLOAD)
            want = struct.unpack(">H", n.data[:2])[0] if n and len(n.data) >= 2 else None
            if want in self.config.dh_groups and want != ctx["group"]:
                return [Send(self._create_child_request(ctx["rekey"], DhGroup(want)))]
        if err is not None:
            return [ChildSaFailed(name_of(NotifyType, err))]
        sa, nr = msg.first(SaPayload), msg.first(NoncePayload)
        tsi, tsr = msg.first(TsiPayload), msg.first(TsrPayload)
        if sa is None or nr is None or tsi is None or tsr is None:
            raise ParseError("CREATE_CHILD_SA response lacks SA, Nonce or TS")
        prop, cipher = self._check_child_response(sa, ctx["group"])
        shared = None
        if ctx["ke"] is not None:
            ke = msg.first(KePayload)
            if ke is None or ke.group != ctx["group"]:
                raise ParseError("CREATE_CHILD_SA response lacks the KE payload for PFS")
            shared = ctx["ke"].shared(ke.data)
        return [
            self._child_event(
                cipher,
                ctx["spi"],
                prop.spi,
                ctx["ni"],
                nr.data,
                True,
                shared,
                tsi.selectors,
                tsr.selectors,
                ctx["rekey"],
                self._transport_mode(msg),
            )
        ]

    def _on_request(self, msg: Message) -> list[Event]:
        crit = next((p for p in msg.payloads if isinstance(p, UnknownPayload) and p.critical), None)
        if crit is not None:
            return [
                self._respond(
                    msg,
                    [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([crit.payload_type]))],
                )
            ]
        if msg.exchange == ExchangeType.INFORMATIONAL:
            return self._on_informational(msg)
        if msg.exchange == ExchangeType.CREATE_CHILD_SA:
            return self._on_create_child(msg)
        raise StateError(f"unexpected {name_of(ExchangeType, msg.exchange)} request")

    def _on_informational(self, msg: Message) -> list[Event]:
        if _notify(msg, NotifyType.AUTHENTICATION_FAILED) is not None:
            send = self._respond(msg, [])
            self.state = State.FAILED
            self._children.clear()
            return [send, AuthFailed("peer rejected our authentication")]
        events: list[Event] = []
        answer: list = []
        for d in msg.find(DeletePayload):
            if d.protocol == ProtocolId.IKE:
                self.state = State.DELETED
                self._children.clear()
                return [self._respond(msg, []), Deleted(ProtocolId.IKE)]
            ours = []
            for spi in d.spis:
                child = next((c for c in self._children.values() if c.spi_out == _spi_int(spi)), None)
                if child is not None:
                    del self._children[child.spi_in]
                    ours.append(child.spi_in.to_bytes(4, "big"))
                    events.append(Deleted(child.protocol, child.spi_in, child.spi_out))
            if ours:
                answer.append(DeletePayload(d.protocol, tuple(ours)))
        return [self._respond(msg, answer), *events]

    def _on_create_child(self, msg: Message) -> list[Event]:
        sa = msg.first(SaPayload)
        if sa is not None and any(p.protocol == ProtocolId.IKE for p in sa.proposals):
            # IKE SA rekeying is not implemented: refuse cleanly, the peer keeps the current IKE SA.
            return [self._respond(msg, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])]
        rekey = _notify(msg, NotifyType.REKEY_SA)
        rekeyed = None
        if rekey is not None:
            old = next((c for c in self._children.values() if c.spi_out == _spi_int(rekey.spi)), None)
            if old is None:
                return [
                    self._respond(
                        msg, [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, rekey.protocol, rekey.spi)]
                    )
                ]
            rekeyed = old.spi_in
        ni, tsi, tsr = msg.first(NoncePayload), msg.first(TsiPayload), msg.first(TsrPayload)
        ke = msg.first(KePayload)
        if ni is None or tsi is None or tsr is None:
            raise ParseError("CREATE_CHILD_SA request lacks Nonce or TS")
        chosen, why = self._select_child(sa, ke.group if ke else None, with_ke=True)
        if chosen is None:
            if isinstance(why, tuple):
                n = NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=struct.pack(">H", why[1]))
                return [self._respond(msg, [n]), ChildSaFailed("INVALID_KE_PAYLOAD")]
            return [self._respond(msg, [NotifyPayload(why)]), ChildSaFailed(name_of(NotifyType, why))]
        prop, cipher, group = chosen
        ts_i = _intersect_all(tsi.selectors, self.config.remote_ts)
        ts_r = _intersect_all(tsr.selectors, self.config.local_ts)
        if not ts_i or not ts_r:
            return [
                self._respond(msg, [NotifyPayload(NotifyType.TS_UNACCEPTABLE)]),
                ChildSaFailed("TS_UNACCEPTABLE"),
            ]
        shared, ours_ke = None, None
        if group is not None:
            ours_ke = KeyExchange(group, self.config.rng(KeyExchange.private_size(group)))
            shared = ours_ke.shared(ke.data)
        spi = self._new_child_spi()
        nr = self.config.rng(self.config.nonce_len)
        transport = self._transport_mode(msg)
        payloads: list = [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] if transport else []
        payloads.append(SaPayload((self._answer_proposal(prop, cipher, spi, group),)))
        payloads.append(NoncePayload(nr))
        if ours_ke is not None:
            payloads.append(KePayload(group, ours_ke.public))
        payloads += [TsiPayload(ts_i), TsrPayload(ts_r)]
        send = self._respond(msg, payloads)
        ev = self._child_event(
            cipher, spi, prop.spi, ni.data, nr, False, shared, ts_r, ts_i, rekeyed, transport
        )
        return [send, ev]

    def _answer_proposal(
        self, prop: Proposal, cipher: CipherSuite, spi: bytes, group: DhGroup | None
    ) -> Proposal:
        ts = [Transform(TransformType.ENCR, cipher.encr, cipher.key_bits)]
        if group is not None:
            ts.append(Transform(TransformType.KE, group))
        ts.append(Transform(TransformType.ESN, EsnId.NO))
        return Proposal(prop.number, prop.protocol, spi, tuple(ts))

    def _handshake(self, hdr, data: bytes) -> list[Event]:
        raise NotImplementedError


# --- initiator ----------------------------------------------------------------------------------------------


class Initiator(_IkeSa):
    """The original initiator: `start()` returns IKE_SA_INIT; feed responses to `receive()`."""

    original_initiator = True

    def start(self) -> bytes:
        if self.state != State.IDLE:
            raise StateError("start() may be called once")
        c = self.config
        while self.spi_i == bytes(8):
            self.spi_i = c.rng(8)
        self._ni = c.rng(c.nonce_len)
        self._ke = KeyExchange(c.dh_groups[0], c.rng(KeyExchange.private_size(c.dh_groups[0])))
        self._cookie: bytes | None = None
        self._m1 = self._build_init()
        self.state = State.INIT_SENT
        self._pending = _Pending(0, ExchangeType.IKE_SA_INIT, self._m1, "init")
        return self._m1

    def _build_init(self) -> bytes:
        payloads: list = []
        if self._cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, data=self._cookie))
        payloads += [self._ike_proposal(), KePayload(self._ke.group, self._ke.public), NoncePayload(self._ni)]
        payloads += self._hash_notify()
        return self._plain(ExchangeType.IKE_SA_INIT, 0, False, payloads)

    def _handshake(self, hdr, data: bytes) -> list[Event]:
        if not hdr.is_response or hdr.spi_i != self.spi_i:
            raise StateError("not a response to our IKE_SA_INIT/IKE_AUTH")
        if hdr.exchange == ExchangeType.IKE_SA_INIT and self.state == State.INIT_SENT and hdr.message_id == 0:
            return self._on_init_response(open_message(data, None))
        if hdr.exchange == ExchangeType.IKE_AUTH and self.state == State.AUTH_SENT and hdr.message_id == 1:
            if hdr.spi_r != self.spi_r:
                raise StateError("IKE_AUTH response for another IKE SA")
            return self._on_auth_response(open_message(data, self._aead_in))
        raise StateError("unexpected handshake message")

    def _on_init_response(self, msg: Message) -> list[Event]:
        cookie = _notify(msg, NotifyType.COOKIE)
        if cookie is not None and self._cookie is None:
            self._cookie = cookie.data
            self._m1 = self._build_init()
            self._pending = _Pending(0, ExchangeType.IKE_SA_INIT, self._m1, "init")
            return [Send(self._m1)]
        err = _error_notify(msg)
        if err == NotifyType.INVALID_KE_PAYLOAD:
            n = _notify(msg, NotifyType.INVALID_KE_PAYLOAD)
            want = struct.unpack(">H", n.data[:2])[0] if len(n.data) >= 2 else None
            if want in self.config.dh_groups and want != self._ke.group:
                self._ke = KeyExchange(want, self.config.rng(KeyExchange.private_size(want)))
                self._m1 = self._build_init()
                self._pending = _Pending(0, ExchangeType.IKE_SA_INIT, self._m1, "init")
                return [Send(self._m1)]
        if err is not None:
            self.state = State.FAILED
            self._pending = None
            return [NegotiationFailed(f"responder sent {name_of(NotifyType, err)}")]
        sa, ke, nr = msg.first(SaPayload), msg.first(KePayload), msg.first(NoncePayload)
        if sa is None or ke is None or nr is None or msg.spi_r == bytes(8):
            raise ParseError("IKE_SA_INIT response lacks SA, KE or Nonce")
        cipher, prf_id, group = self._check_ike_response(sa)
        if ke.group != group or group != self._ke.group:
            raise ParseError("KE group does not match the selected DH group")
        shared = self._ke.shared(ke.data)
        # Commit: everything below is derived from a validated response.
        self.spi_r, self._nr, self._m2 = msg.spi_r, nr.data, msg.raw
        self._cipher, self._prf, self._group = cipher, Prf(prf_id), DhGroup(group)
        self._learn_peer_hashes(msg)
        self._derive(shared)
        self._child_spi = self._new_child_spi()
        first = self.config.child_ciphers[0]
        self._first_child_keymat = child_keymat(self._prf, self._keys.sk_d, self._ni, self._nr, first.key_len)
        m3 = self._build_auth()
        self.state = State.AUTH_SENT
        self._pending = _Pending(1, ExchangeType.IKE_AUTH, m3, "auth")
        self._next_mid = 2
        return [Send(m3)]

    def _check_ike_response(self, sa: SaPayload) -> tuple[CipherSuite, int, int]:
        if len(sa.proposals) != 1 or sa.proposals[0].protocol != ProtocolId.IKE:
            raise ParseError("IKE_SA_INIT response must select exactly one IKE proposal")
        p = sa.proposals[0]
        cipher = self._pick_cipher(p, self.config.ike_ciphers)
        prfs = [t.id for t in p.of_type(TransformType.PRF)]
        kes = [t.id for t in p.of_type(TransformType.KE)]
        if (
            cipher is None
            or len(prfs) != 1
            or prfs[0] not in self.config.prfs
            or len(kes) != 1
            or kes[0] not in self.config.dh_groups
            or p.of_type(TransformType.INTEG)
        ):
            raise ParseError("responder selected transforms we did not offer")
        return cipher, prfs[0], kes[0]

    def _build_auth(self) -> bytes:
        c = self.config
        idi = IdiPayload(c.local_id.id_type, c.local_id.data)
        payloads: list = [idi]
        auth = self._auth_payloads(self._m1, self._nr, self._keys.sk_pi, idi)
        payloads += [p for p in auth if isinstance(p, CertPayload)]
        payloads += self._certreq()
        if c.remote_id is not None:
            payloads.append(IdrPayload(c.remote_id.id_type, c.remote_id.data))
        payloads += [p for p in auth if isinstance(p, AuthPayload)]
        if self._transport_mode_wanted():
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        payloads += [
            self._child_proposal(self._child_spi, None),
            TsiPayload(c.local_ts),
            TsrPayload(c.remote_ts),
        ]
        return self._seal(ExchangeType.IKE_AUTH, 1, False, payloads)

    def _on_auth_response(self, msg: Message) -> list[Event]:
        idr = msg.first(IdrPayload)
        if msg.first(AuthPayload) is None:
            err = _error_notify(msg)
            self.state, self._pending = State.FAILED, None
            return [AuthFailed(f"responder sent {name_of(NotifyType, err) if err else 'no AUTH'}")]
        try:
            peer = self._verify_peer(msg, idr, self._m2, self._ni, self._keys.sk_pr)
        except ikeauth.AuthenticationError as e:
            # RFC 7296 §2.21.2: tell the responder, whose IKE SA already exists, in an INFORMATIONAL request.
            notice = self._seal(
                ExchangeType.INFORMATIONAL, 2, False, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
            )
            self.state, self._pending, self._final_mid = State.FAILED, None, 2
            return [Send(notice), AuthFailed(str(e))]
        self._remote_id = peer
        self.state, self._pending = State.ESTABLISHED, None
        events: list[Event] = [self._established_event()]
        err = _error_notify(msg)
        sa, tsi, tsr = msg.first(SaPayload), msg.first(TsiPayload), msg.first(TsrPayload)
        if err is not None or sa is None or tsi is None or tsr is None:
            events.append(ChildSaFailed(name_of(NotifyType, err) if err else "responder created no child SA"))
            return events
        try:
            prop, cipher = self._check_child_response(sa, None)
        except ParseError as e:
            events.append(ChildSaFailed(str(e)))
            return events
        self._first_child_keymat = child_keymat(
            self._prf, self._keys.sk_d, self._ni, self._nr, cipher.key_len
        )
        events.append(
            self._child_event(
                cipher,
                self._child_spi,
                prop.spi,
                self._ni,
                self._nr,
                True,
                None,
                tsi.selectors,
                tsr.selectors,
                None,
                self._transport_mode(msg),
            )
        )
        return events


# --- responder ----------------------------------------------------------------------------------------------


class Responder(_IkeSa):
    """The original responder: feed the IKE_SA_INIT request to `receive()`; answers come back as `Send`."""

    original_initiator = False

    def _handshake(self, hdr, data: bytes) -> list[Event]:
        if hdr.is_response:
            raise StateError("responder got a handshake response")
        if hdr.exchange == ExchangeType.IKE_SA_INIT and hdr.message_id == 0:
            if self.state == State.INIT_DONE and data == self._m1:
                return [Send(self._m2)]  # retransmitted request
            if self.state == State.IDLE and hdr.spi_r == bytes(8) and hdr.spi_i != bytes(8):
                return self._on_init(open_message(data, None))
        if hdr.exchange == ExchangeType.IKE_AUTH and self.state == State.INIT_DONE and hdr.message_id == 1:
            if hdr.spi_i != self.spi_i or hdr.spi_r != self.spi_r:
                raise StateError("IKE_AUTH for another IKE SA")
            return self._on_auth(open_message(data, self._aead_in), data)
        raise StateError("unexpected handshake message")

    def _reject_init(self, msg: Message, notify: NotifyPayload, reason: str | None) -> list[Event]:
        # Stateless answer: no IKE SA is created; the initiator may retry (INVALID_KE) or give up.
        m = Message(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, 0, True, False, (notify,))
        send = Send(encode_plain(m))
        return [send, NegotiationFailed(reason)] if reason else [send]

    def _on_init(self, msg: Message) -> list[Event]:
        c = self.config
        sa, ke, ni = msg.first(SaPayload), msg.first(KePayload), msg.first(NoncePayload)
        if sa is None or ke is None or ni is None:
            raise ParseError("IKE_SA_INIT request lacks SA, KE or Nonce")
        choice = None
        fallback_group = None
        for p in sa.proposals:
            if p.protocol != ProtocolId.IKE or p.spi or any(t.unknown_attributes for t in p.transforms):
                continue
            if [t for t in p.of_type(TransformType.INTEG) if t.id != 0]:
                continue  # non-AEAD proposals are not supported
            cipher = self._pick_cipher(p, c.ike_ciphers)
            prf = next((t.id for t in p.of_type(TransformType.PRF) if t.id in c.prfs), None)
            groups = [t.id for t in p.of_type(TransformType.KE) if t.id in c.dh_groups]
            if cipher is None or prf is None or not groups:
                continue
            if ke.group in groups:
                choice = (p, cipher, prf, ke.group)
                break
            fallback_group = fallback_group or groups[0]
        if choice is None:
            if fallback_group is not None:
                n = NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=struct.pack(">H", fallback_group))
                return self._reject_init(msg, n, None)
            return self._reject_init(
                msg, NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), "no acceptable IKE proposal"
            )
        p, cipher, prf_id, group = choice
        our_ke = KeyExchange(group, c.rng(KeyExchange.private_size(group)))
        shared = our_ke.shared(ke.data)
        spi_r = bytes(8)
        while spi_r == bytes(8):
            spi_r = c.rng(8)
        nr = c.rng(c.nonce_len)
        # Commit.
        self.spi_i, self.spi_r, self._ni, self._nr = msg.spi_i, spi_r, ni.data, nr
        self._cipher, self._prf, self._group = cipher, Prf(prf_id), DhGroup(group)
        self._learn_peer_hashes(msg)
        self._derive(shared)
        chosen = Proposal(
            p.number,
            ProtocolId.IKE,
            b"",
            (
                Transform(TransformType.ENCR, cipher.encr, cipher.key_bits),
                Transform(TransformType.PRF, prf_id),
                Transform(TransformType.KE, group),
            ),
        )
        payloads: list = [SaPayload((chosen,)), KePayload(group, our_ke.public), NoncePayload(nr)]
        payloads += self._certreq() + self._hash_notify()
        self._m1 = msg.raw
        self._m2 = self._plain(ExchangeType.IKE_SA_INIT, 0, True, payloads)
        self.state = State.INIT_DONE
        self._peer_mid = 1
        return [Send(self._m2)]

    def _on_auth(self, msg: Message, raw: bytes) -> list[Event]:
        c = self.config
        idi = msg.first(IdiPayload)
        try:
            peer = self._verify_peer(msg, idi, self._m1, self._nr, self._keys.sk_pi)
        except ikeauth.AuthenticationError as e:
            send = self._respond(msg, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)])
            self.state = State.FAILED
            return [send, AuthFailed(str(e))]
        self._remote_id = peer
        idr = IdrPayload(c.local_id.id_type, c.local_id.data)
        payloads: list = [idr] + self._auth_payloads(self._m2, self._ni, self._keys.sk_pr, idr)
        first = c.child_ciphers[0]
        self._first_child_keymat = child_keymat(self._prf, self._keys.sk_d, self._ni, self._nr, first.key_len)
        child_events: list[Event] = []
        chosen, why = self._select_child(msg.first(SaPayload), None, with_ke=False)
        tsi, tsr = msg.first(TsiPayload), msg.first(TsrPayload)
        ts_i = _intersect_all(tsi.selectors, c.remote_ts) if tsi else ()
        ts_r = _intersect_all(tsr.selectors, c.local_ts) if tsr else ()
        if chosen is None:
            payloads.append(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
            child_events.append(ChildSaFailed("NO_PROPOSAL_CHOSEN"))
        elif not ts_i or not ts_r:
            payloads.append(NotifyPayload(NotifyType.TS_UNACCEPTABLE))
            child_events.append(ChildSaFailed("TS_UNACCEPTABLE"))
        else:
            prop, cipher, _ = chosen
            spi = self._new_child_spi()
            transport = self._transport_mode(msg)
            if transport:
                payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
            payloads += [
                SaPayload((self._answer_proposal(prop, cipher, spi, None),)),
                TsiPayload(ts_i),
                TsrPayload(ts_r),
            ]
            self._first_child_keymat = child_keymat(
                self._prf, self._keys.sk_d, self._ni, self._nr, cipher.key_len
            )
            child_events.append(
                self._child_event(
                    cipher, spi, prop.spi, self._ni, self._nr, False, None, ts_r, ts_i, None, transport
                )
            )
        send = self._respond(msg, payloads)
        self.state = State.ESTABLISHED
        self._peer_mid = 2
        self._last_request, self._last_response = raw, send.data
        return [send, self._established_event(), *child_events]


__all__ = [
    "AuthFailed",
    "ChildSaEstablished",
    "ChildSaFailed",
    "ChildSaInfo",
    "Deleted",
    "Established",
    "Event",
    "Initiator",
    "NegotiationFailed",
    "PeerAlive",
    "Responder",
    "Send",
    "State",
]
