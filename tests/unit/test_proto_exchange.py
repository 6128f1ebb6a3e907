"""Pairing rules: responses to requests and EVENT_ACKs to events."""

from __future__ import annotations

import pytest

from edifd.proto import (
    Ack,
    AppStart,
    AppStartChallenge,
    AppStartPhase,
    EventAck,
    Keepalive,
    LinkDown,
    MalformedHeaderError,
    Message,
    MessageType,
    PortInfo,
    PortRef,
    Response,
    SessionShutdown,
    ShutdownReason,
    Status,
    TargetList,
    ack_for,
    check_response,
    decode,
    encode,
    response_to,
)
from tests.support.proto import keys_for

KEY = bytes(32)
NA = bytes([1]) * 32


def test_response_copies_correlation_fields() -> None:
    req = Message(Keepalive(), port_index=3, epoch=77, request_id=12, sequence=4)
    rsp = response_to(req, Response(MessageType.KEEPALIVE, Status.OK), sequence=9)
    assert (rsp.port_index, rsp.epoch, rsp.request_id, rsp.sequence) == (3, 77, 12, 9)
    keys = keys_for(77, KEY, 3)
    got = decode(encode(rsp, KEY, keys=keys), KEY, keys=keys)  # sealed: epoch 77
    assert got.sealed and got == rsp
    check_response(req, got)


def test_handshake_answer_keeps_epoch_zero_by_default() -> None:
    hello = Message(AppStart(AppStartPhase.HELLO, NA), request_id=1)
    ch = response_to(hello, AppStartChallenge(NA, bytes(32)), sequence=0)
    assert ch.epoch == 0 and ch.type is MessageType.APP_START_CHALLENGE
    assert response_to(hello, AppStartChallenge(NA, bytes(32)), sequence=0, epoch=5).epoch == 5


def test_wrong_pairings_refused() -> None:
    req = Message(Keepalive(), port_index=1, request_id=12)
    with pytest.raises(MalformedHeaderError):
        response_to(req, PortInfo(1, 2), sequence=1)  # not an answer to KEEPALIVE
    with pytest.raises(MalformedHeaderError):
        response_to(req, Response(MessageType.GET_TARGETS), sequence=1)  # names another request
    with pytest.raises(MalformedHeaderError):
        response_to(Message(LinkDown()), Response(MessageType.KEEPALIVE), sequence=1)
    good = response_to(req, Response(MessageType.KEEPALIVE), sequence=1)
    with pytest.raises(MalformedHeaderError):
        check_response(req, Message(good.body, 1, 0, 13, 1))  # other request id
    with pytest.raises(MalformedHeaderError):
        check_response(req, Message(good.body, 2, 0, 12, 1))  # other port
    with pytest.raises(MalformedHeaderError):
        check_response(req, Message(TargetList(0, 0, ()), 1, 0, 12, 1))


def test_ack_for_event() -> None:
    port = PortRef(0x21, 0x010101, 4)
    ev = Message(SessionShutdown(port, ShutdownReason.LOGO), port_index=2, epoch=8, sequence=40)
    ack = ack_for(ev, request_id=99, sequence=17)
    assert ack.body == EventAck(MessageType.SESSION_SHUTDOWN, 40, port)
    assert (ack.port_index, ack.epoch, ack.request_id, ack.sequence) == (2, 8, 99, 17)
    assert ack_for(Message(LinkDown(), sequence=3), request_id=1, sequence=1).body.port == PortRef(0)
    with pytest.raises(MalformedHeaderError):
        ack_for(Message(Keepalive(), request_id=1), request_id=2, sequence=1)
    # The downstream ACK is neither a request (nothing answers it) nor an event.
    down_ack = Message(Ack(), port_index=2, epoch=8, ack=40)
    with pytest.raises(MalformedHeaderError):
        ack_for(down_ack, request_id=2, sequence=1)
    with pytest.raises(MalformedHeaderError):
        response_to(down_ack, Response(MessageType.KEEPALIVE), sequence=1)
    assert MessageType.ACK.responses == frozenset()
