"""The original initiator's handshake: IKE_SA_INIT (with COOKIE echo and INVALID_KE_PAYLOAD retry), then
IKE_AUTH with the first child SA."""

from __future__ import annotations

from typing import ClassVar

from . import auth as ikeauth
from . import child_sa
from .codes import DhGroup, ExchangeType, NotifyType, name_of
from .config import IkeConfig
from .crypto import KeyExchange, Prf, child_keymat
from .errors import ParseError, StateError
from .events import AuthFailed, ChildSaFailed, Event, NegotiationFailed, Send
from .message import Header, Message, open_message
from .outstanding import AuthRequest, InitRequest, Outstanding
from .payloads import (
    AuthPayload,
    CertPayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
)
from .peer_auth import certreq, hash_notify
from .proposals import check_ike_choice, ike_offer, requested_group
from .session import IkeSa, State


class Initiator(IkeSa):
    """The original initiator: `start()` returns IKE_SA_INIT; feed responses to `receive()`."""

    original_initiator: ClassVar[bool] = True

    def __init__(self, config: IkeConfig) -> None:
        super().__init__(config)
        self._ke: KeyExchange | None = None
        self._cookie: bytes | None = None
        self._child_spi = b""  # our inbound SPI of the first child, offered in IKE_AUTH

    def start(self) -> bytes:
        if self.state != State.IDLE:
            raise StateError("start() may be called once")
        c = self.config
        while self.spi_i == bytes(8):
            self.spi_i = c.rng(8)
        self._ni = c.rng(c.nonce_len)
        self._ke = KeyExchange(c.dh_groups[0], c.rng(KeyExchange.private_size(c.dh_groups[0])))
        self._m1 = self._build_init()
        self.state = State.INIT_SENT
        self._pending = Outstanding(0, self._m1, InitRequest())
        return self._m1

    def _build_init(self) -> bytes:
        assert self._ke is not None
        payloads: list[Payload] = []
        if self._cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, data=self._cookie))
        payloads += [
            ike_offer(self.config),
            KePayload(self._ke.group, self._ke.public),
            NoncePayload(self._ni),
        ]
        payloads += hash_notify(self.config)
        return self._plain(ExchangeType.IKE_SA_INIT, 0, False, payloads)

    def _handshake(self, hdr: Header, data: bytes) -> list[Event]:
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
        assert self._ke is not None
        cookie = msg.notify(NotifyType.COOKIE)
        if cookie is not None and self._cookie is None:
            self._cookie = cookie.data
            self._m1 = self._build_init()
            self._pending = Outstanding(0, self._m1, InitRequest())
            return [Send(self._m1)]
        err = msg.error_notify()
        if err == NotifyType.INVALID_KE_PAYLOAD:
            want = requested_group(msg)
            if want in self.config.dh_groups and want != self._ke.group:
                self._ke = KeyExchange(want, self.config.rng(KeyExchange.private_size(want)))
                self._m1 = self._build_init()
                self._pending = Outstanding(0, self._m1, InitRequest())
                return [Send(self._m1)]
        if err is not None:
            self.state = State.FAILED
            self._pending = None
            return [NegotiationFailed(f"responder sent {name_of(NotifyType, err)}")]
        sa, ke, nr = msg.first(SaPayload), msg.first(KePayload), msg.first(NoncePayload)
        if sa is None or ke is None or nr is None or msg.spi_r == bytes(8):
            raise ParseError("IKE_SA_INIT response lacks SA, KE or Nonce")
        choice = check_ike_choice(self.config, sa)
        if ke.group != choice.group or choice.group != self._ke.group:
            raise ParseError("KE group does not match the selected DH group")
        shared = self._ke.shared(ke.data)
        # Commit: everything below is derived from a validated response.
        self.spi_r, self._nr, self._m2 = msg.spi_r, nr.data, msg.raw
        self._cipher, self._prf, self._group = choice.cipher, Prf(choice.prf), DhGroup(choice.group)
        self._learn_peer_hashes(msg)
        self._derive(shared)
        assert self._keys is not None
        self._child_spi = self._children.new_spi(self.config.rng)
        first = self.config.child_ciphers[0]
        self._first_child_keymat = child_keymat(self._prf, self._keys.sk_d, self._ni, self._nr, first.key_len)
        m3 = self._build_auth()
        self.state = State.AUTH_SENT
        self._pending = Outstanding(1, m3, AuthRequest())
        self._next_mid = 2
        return [Send(m3)]

    def _build_auth(self) -> bytes:
        assert self._keys is not None
        c = self.config
        idi = IdiPayload(c.local_id.id_type, c.local_id.data)
        payloads: list[Payload] = [idi]
        auth = self._auth_payloads(self._m1, self._nr, self._keys.sk_pi, idi)
        payloads += [p for p in auth if isinstance(p, CertPayload)]
        payloads += certreq(c)
        if c.remote_id is not None:
            payloads.append(IdrPayload(c.remote_id.id_type, c.remote_id.data))
        payloads += [p for p in auth if isinstance(p, AuthPayload)]
        payloads += child_sa.first_offer(c, self._child_spi)
        return self._seal(ExchangeType.IKE_AUTH, 1, False, payloads)

    def _on_auth_response(self, msg: Message) -> list[Event]:
        assert self._prf is not None and self._keys is not None
        idr = msg.first(IdrPayload)
        if msg.first(AuthPayload) is None:
            err = msg.error_notify()
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
        child = child_sa.read_first_answer(self.config, msg, self._child_spi, self._ni, self._nr)
        if isinstance(child, ChildSaFailed):
            return [*events, child]
        self._first_child_keymat = child_keymat(
            self._prf, self._keys.sk_d, self._ni, self._nr, child.cipher.key_len
        )
        return [*events, self._establish_child(child)]
