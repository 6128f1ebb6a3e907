"""One IKE SA, as both roles share it once IKE_SA_INIT has keyed it: message IDs, SK protection, the
window, and the exchanges either side may start after IKE_AUTH (CREATE_CHILD_SA, INFORMATIONAL).

Sans-IO: bytes in, events out. The caller moves `Send.data` over its transport (AUTH_ELS or UDP) and
decides when to call `retransmit()`. Randomness and the certificate-validation clock come from the
configuration so that tests can make a run reproducible.

Window size 1 (RFC 7296 §2.3): one outstanding request per direction. A request that repeats the last one is
answered with the cached response. Anything malformed, unauthenticated or unexpected raises `IkeError`
and leaves the session unchanged. The handshake itself is the role's (`Initiator`, `Responder`).
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from . import child_sa, peer_auth
from .child_sa import ChildSaInfo, ChildSas
from .codes import DhGroup, ExchangeType, NotifyType, ProtocolId, name_of
from .config import CipherSuite, Identity, IkeConfig
from .crypto import ICV_LEN, SALT_LEN, IkeKeys, KeyExchange, Prf, SkAead, derive_ike_keys, skeyseed
from .errors import IkeError, StateError
from .events import (
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    Established,
    Event,
    PeerAlive,
    Send,
)
from .message import Header, Message, decode_header, encode_plain, encode_protected, open_message
from .outstanding import (
    CreateChildRequest,
    DeleteChildRequest,
    DeleteIkeRequest,
    Outstanding,
    PendingRequest,
    PingRequest,
)
from .payloads import DeletePayload, IdPayload, NotifyPayload, Payload, UnknownPayload
from .proposals import requested_group


class State(Enum):
    IDLE = "idle"
    INIT_SENT = "init_sent"
    INIT_DONE = "init_done"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    AUTH_SENT = "auth_sent"
    ESTABLISHED = "established"
    FAILED = "failed"
    DELETED = "deleted"


class IkeSa:
    """The state and exchanges common to `Initiator` and `Responder`."""

    original_initiator: ClassVar[bool] = False

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
        self._pending: Outstanding | None = None
        self._last_request: bytes | None = None  # the peer's last request and our cached response
        self._last_response: bytes | None = None
        self._children = ChildSas()
        self._peer_hashes: tuple[int, ...] = ()
        self._ni = b""
        self._nr = b""
        self._m1 = b""  # IKE_SA_INIT request and response: both AUTHs sign one of them
        self._m2 = b""
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
        return self._children.all()

    def retransmit(self) -> bytes | None:
        """The outstanding request, unchanged, for the caller's retransmission timer (or None)."""
        return self._pending.data if self._pending else None

    def ping(self) -> bytes:
        """Liveness check: an empty INFORMATIONAL request; answered by `PeerAlive`."""
        return self._request([], PingRequest())

    def delete(self) -> bytes:
        """Delete the IKE SA (and with it every child): INFORMATIONAL D(IKE)."""
        return self._request([DeletePayload(ProtocolId.IKE)], DeleteIkeRequest())

    def delete_child(self, spi_in: int) -> bytes:
        """Delete a child SA pair, named by our inbound SPI."""
        child = self._children.get(spi_in)
        d = DeletePayload(child.protocol, (spi_in.to_bytes(4, "big"),))
        return self._request([d], DeleteChildRequest(spi_in))

    def rekey_child(self, spi_in: int) -> bytes:
        """CREATE_CHILD_SA rekeying the child with inbound SPI spi_in (KE if child_pfs_group is set)."""
        self._children.get(spi_in)
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
                return self._on_response(p.request, msg)
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

    def _handshake(self, hdr: Header, data: bytes) -> list[Event]:
        """IKE_SA_INIT or IKE_AUTH before establishment: the role's part."""
        raise NotImplementedError

    # -- building messages --

    def _msg(self, exchange: int, mid: int, response: bool, payloads: list[Payload]) -> Message:
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

    def _plain(self, exchange: int, mid: int, response: bool, payloads: list[Payload]) -> bytes:
        return self._check_size(encode_plain(self._msg(exchange, mid, response, payloads)))

    def _seal(self, exchange: int, mid: int, response: bool, payloads: list[Payload]) -> bytes:
        # A per-direction counter is a unique IV under SK_e, as RFC 5282 §3.1 requires.
        self._iv += 1
        iv = self._iv.to_bytes(8, "big")
        return self._check_size(
            encode_protected(self._msg(exchange, mid, response, payloads), self._aead_out, iv)
        )

    def _request(self, payloads: list[Payload], request: PendingRequest) -> bytes:
        if self.state != State.ESTABLISHED:
            raise StateError(f"IKE SA is {self.state.value}, not established")
        if self._pending is not None:
            raise StateError("a request is already outstanding (window size 1)")
        data = self._seal(request.exchange, self._next_mid, False, payloads)
        self._pending = Outstanding(self._next_mid, data, request)
        self._next_mid += 1
        return data

    def _respond(self, msg: Message, payloads: list[Payload]) -> Send:
        return Send(self._seal(msg.exchange, msg.message_id, True, payloads))

    # -- keys and what IKE_SA_INIT / IKE_AUTH leave behind --

    def _derive(self, shared: bytes) -> None:
        assert self._prf is not None and self._cipher is not None
        seed = skeyseed(self._prf, self._ni, self._nr, shared)
        enc_len = self._cipher.key_len + SALT_LEN
        self._keys = derive_ike_keys(self._prf, seed, self._ni, self._nr, self.spi_i, self.spi_r, enc_len)
        self._shared = shared
        icv = ICV_LEN[self._cipher.encr]
        ei, er = SkAead(self._keys.sk_ei, icv), SkAead(self._keys.sk_er, icv)
        self._aead_out, self._aead_in = (ei, er) if self.original_initiator else (er, ei)

    def _learn_peer_hashes(self, msg: Message) -> None:
        hashes = peer_auth.peer_hashes(msg)
        if hashes is not None:
            self._peer_hashes = hashes

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

    def _establish_child(self, new: child_sa.NewChild) -> ChildSaEstablished:
        assert self._prf is not None and self._keys is not None
        return child_sa.establish(self.config, self._children, self._prf, self._keys.sk_d, new)

    # -- exchanges after IKE_AUTH (either side may start them) --

    def _create_child_request(self, rekey: int | None, group: DhGroup | None) -> bytes:
        if self.state != State.ESTABLISHED:
            raise StateError("IKE SA not established")
        c = self.config
        spi = self._children.new_spi(c.rng)
        ni = c.rng(c.nonce_len)
        old = self._children.get(rekey) if rekey is not None else None
        ke = KeyExchange(group, c.rng(KeyExchange.private_size(group))) if group else None
        req = CreateChildRequest(spi=spi, ni=ni, ke=ke, group=group, rekey=rekey)
        return self._request(child_sa.create_offer(c, req, old), req)

    def _on_response(self, request: PendingRequest, msg: Message) -> list[Event]:
        match request:
            case PingRequest():
                return [PeerAlive()]
            case DeleteIkeRequest():
                self.state = State.DELETED
                self._children.clear()
                return [Deleted(ProtocolId.IKE)]
            case DeleteChildRequest(spi_in=spi_in):
                child = self._children.pop(spi_in)
                return [Deleted(child.protocol, child.spi_in, child.spi_out)] if child else []
            case CreateChildRequest():
                return self._on_create_child_response(request, msg)
        raise StateError(f"no response expected to {type(request).__name__} here")

    def _on_create_child_response(self, req: CreateChildRequest, msg: Message) -> list[Event]:
        err = msg.error_notify()
        if err == NotifyType.INVALID_KE_PAYLOAD and req.group is not None:
            want = requested_group(msg)
            if want in self.config.dh_groups and want != req.group:
                return [Send(self._create_child_request(req.rekey, DhGroup(want)))]
        if err is not None:
            return [ChildSaFailed(name_of(NotifyType, err))]
        return [self._establish_child(child_sa.read_create_answer(self.config, req, msg))]

    def _on_request(self, msg: Message) -> list[Event]:
        crit = next((p for p in msg.payloads if isinstance(p, UnknownPayload) and p.critical), None)
        if crit is not None:
            notify = NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([crit.payload_type]))
            return [self._respond(msg, [notify])]
        if msg.exchange == ExchangeType.INFORMATIONAL:
            return self._on_informational(msg)
        if msg.exchange == ExchangeType.CREATE_CHILD_SA:
            return self._on_create_child(msg)
        raise StateError(f"unexpected {name_of(ExchangeType, msg.exchange)} request")

    def _on_informational(self, msg: Message) -> list[Event]:
        if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
            send = self._respond(msg, [])
            self.state = State.FAILED
            self._children.clear()
            return [send, AuthFailed("peer rejected our authentication")]
        events: list[Event] = []
        answer: list[Payload] = []
        for d in msg.find(DeletePayload):
            if d.protocol == ProtocolId.IKE:
                self.state = State.DELETED
                self._children.clear()
                return [self._respond(msg, []), Deleted(ProtocolId.IKE)]
            ours = []
            for spi in d.spis:
                child = self._children.by_spi_out(spi)
                if child is not None:
                    self._children.pop(child.spi_in)
                    ours.append(child.spi_in.to_bytes(4, "big"))
                    events.append(Deleted(child.protocol, child.spi_in, child.spi_out))
            if ours:
                answer.append(DeletePayload(d.protocol, tuple(ours)))
        return [self._respond(msg, answer), *events]

    def _on_create_child(self, msg: Message) -> list[Event]:
        answer = child_sa.answer_create(self.config, self._children, msg)
        events: list[Event] = [self._respond(msg, list(answer.payloads))]
        if isinstance(answer.outcome, child_sa.NewChild):
            events.append(self._establish_child(answer.outcome))
        elif answer.outcome is not None:
            events.append(answer.outcome)
        return events

    # -- authentication, for the roles' IKE_AUTH --

    def _auth_payloads(
        self, real_message: bytes, peer_nonce: bytes, sk_p: bytes, id_payload: IdPayload
    ) -> list[Payload]:
        assert self._prf is not None
        return peer_auth.auth_payloads(
            self.config, self._prf, self._peer_hashes, real_message, peer_nonce, sk_p, id_payload
        )

    def _verify_peer(
        self, msg: Message, id_payload: IdPayload | None, real_message: bytes, our_nonce: bytes, sk_p: bytes
    ) -> Identity:
        """The peer's authenticated identity, or AuthenticationError."""
        assert self._prf is not None
        return peer_auth.verify_peer(self.config, self._prf, msg, id_payload, real_message, our_nonce, sk_p)
