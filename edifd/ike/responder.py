"""The original responder's handshake: answer IKE_SA_INIT (or refuse it statelessly), then IKE_AUTH with the
first child SA. It never demands a cookie."""

from __future__ import annotations

from typing import ClassVar

from . import auth as ikeauth
from . import child_sa
from .codes import DhGroup, ExchangeType, NotifyType
from .crypto import KeyExchange, Prf, child_keymat
from .errors import ParseError, StateError
from .events import AuthFailed, Event, NegotiationFailed, Send
from .message import Header, Message, encode_plain, open_message
from .payloads import IdiPayload, IdrPayload, KePayload, NoncePayload, NotifyPayload, Payload, SaPayload
from .peer_auth import certreq, hash_notify
from .proposals import IkeChoice, InvalidKe, choose_ike, invalid_ke_notify
from .session import IkeSa, State


class Responder(IkeSa):
    """The original responder: feed the IKE_SA_INIT request to `receive()`; answers come back as `Send`."""

    original_initiator: ClassVar[bool] = False

    def _handshake(self, hdr: Header, data: bytes) -> list[Event]:
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
        choice = choose_ike(c, sa, ke.group)
        if isinstance(choice, InvalidKe):
            return self._reject_init(msg, invalid_ke_notify(choice.group), None)
        if not isinstance(choice, IkeChoice):
            notify = NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)
            return self._reject_init(msg, notify, "no acceptable IKE proposal")
        our_ke = KeyExchange(choice.group, c.rng(KeyExchange.private_size(choice.group)))
        shared = our_ke.shared(ke.data)
        spi_r = bytes(8)
        while spi_r == bytes(8):
            spi_r = c.rng(8)
        nr = c.rng(c.nonce_len)
        # Commit.
        self.spi_i, self.spi_r, self._ni, self._nr = msg.spi_i, spi_r, ni.data, nr
        self._cipher, self._prf, self._group = choice.cipher, Prf(choice.prf), DhGroup(choice.group)
        self._learn_peer_hashes(msg)
        self._derive(shared)
        payloads: list[Payload] = [
            SaPayload((choice.answer(),)),
            KePayload(choice.group, our_ke.public),
            NoncePayload(nr),
        ]
        payloads += certreq(c) + hash_notify(c)
        self._m1 = msg.raw
        self._m2 = self._plain(ExchangeType.IKE_SA_INIT, 0, True, payloads)
        self.state = State.INIT_DONE
        self._peer_mid = 1
        return [Send(self._m2)]

    def _on_auth(self, msg: Message, raw: bytes) -> list[Event]:
        assert self._prf is not None and self._keys is not None
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
        payloads = [idr, *self._auth_payloads(self._m2, self._ni, self._keys.sk_pr, idr)]
        first = c.child_ciphers[0]
        self._first_child_keymat = child_keymat(self._prf, self._keys.sk_d, self._ni, self._nr, first.key_len)
        child = child_sa.answer_first(c, self._children, msg, self._ni, self._nr)
        payloads += child.payloads
        child_events: list[Event] = []
        if isinstance(child.outcome, child_sa.NewChild):
            self._first_child_keymat = child_keymat(
                self._prf, self._keys.sk_d, self._ni, self._nr, child.outcome.cipher.key_len
            )
            child_events.append(self._establish_child(child.outcome))
        elif child.outcome is not None:
            child_events.append(child.outcome)
        send = self._respond(msg, payloads)
        self.state = State.ESTABLISHED
        self._peer_mid = 2
        self._last_request, self._last_response = raw, send.data
        return [send, self._established_event(), *child_events]
