"""SecurityApp against the fake host's events: session shutdown, target and link loss, host reset, stale
logins, APP_STOP, keepalive and host loss, IKE retransmission, malformed input, and any upstream sequence.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.proto import (
    AppStop,
    AuthFail,
    AuthFailReason,
    AuthOk,
    Body,
    Direction,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsSend,
    EventAck,
    GetTargets,
    HostReset,
    Keepalive,
    Kind,
    LinkDown,
    LinkUp,
    Message,
    MessageType,
    PortOnline,
    PortRef,
    Response,
    SaDirection,
    SaUpdate,
    SaUpdateCompl,
    SessionShutdown,
    ShutdownReason,
    Status,
    TargetGone,
)
from edifd.secapp.app import AppEvent, AppNotice, ChannelLost, SessionSecure, SessionState
from tests.support.secapp import PSK1, PSK2, T1, T2, FakeTarget, assert_keys_crosswise, setup
from tests.support.strategies import messages_of

# --- session and link events -----------------------------------------------------------------------------


def test_session_shutdown_is_acked_and_session_reauthenticates():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], reconnect_delay=1.0)
    host.start()
    t.generation += 1  # the host ends that login
    host.sa[T1].clear()
    ev = host.inject(SessionShutdown(t.ref, ShutdownReason.LOGO))
    acks = host.down(EventAck)
    assert len(acks) == 1
    assert acks[0].event_type is MessageType.SESSION_SHUTDOWN and acks[0].event_sequence == ev.sequence
    assert acks[0].port == t.ref
    assert app.session(T1).state is SessionState.IDLE
    host.tick(1.5)
    assert app.session(T1).state is SessionState.SECURE
    assert len(host.of(SessionSecure)) == 2
    assert_keys_crosswise(host, t, app)


def test_target_gone_then_back_reauthenticates():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    first = app.session(T1).current
    t.online = False
    host.sa[T1].clear()
    host.inject(TargetGone(t.ref))
    assert app.session(T1).state is SessionState.IDLE and app.session(T1).ike is None
    n = len(host.down())
    host.run_for(30)
    assert [b for b in host.down()[n:] if not isinstance(b, Keepalive)] == []  # waits for the target
    t.online, t.generation = True, t.generation + 1
    host.inject(PortOnline(t.ref))
    s = app.session(T1)
    assert s.state is SessionState.SECURE and s.port.generation == t.generation
    assert s.current.spi_in != first.spi_in
    assert_keys_crosswise(host, t, app)


def test_link_down_and_up_reauthenticates_everything():
    t1, t2 = FakeTarget(T1, 0x020200, PSK1, seed=1), FakeTarget(T2, 0x020300, PSK2, seed=2)
    app, host = setup({T1: PSK1, T2: PSK2}, [t1, t2])
    host.start()
    host.link_up = False
    for t in (t1, t2):
        host.sa[t.wwpn].clear()
        t.generation += 1
    host.inject(LinkDown())
    assert all(s.state is SessionState.IDLE for s in app.sessions.values())
    host.link_up = True
    mark = len(host.log)
    host.inject(LinkUp())
    assert host.names()[mark + 1 : mark + 5] == [
        "v GET_PORT_INFO", "^ PORT_INFO", "v GET_TARGETS", "^ TARGET_LIST"
    ]
    assert all(s.state is SessionState.SECURE for s in app.sessions.values())
    assert len(host.of(SessionSecure)) == 4
    for t in (t1, t2):
        assert_keys_crosswise(host, t, app)


def test_host_reset_rediscovers_and_reauthenticates():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    host.sa[T1].clear()
    t.generation += 1
    mark = len(host.log)
    host.inject(HostReset())
    assert host.names()[mark + 1 : mark + 5] == [
        "v GET_PORT_INFO", "^ PORT_INFO", "v GET_TARGETS", "^ TARGET_LIST"
    ]
    assert app.session(T1).state is SessionState.SECURE
    assert app.session(T1).port.generation == t.generation
    assert_keys_crosswise(host, t, app)


def test_stale_generation_is_refreshed_from_the_target_list():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    t.generation += 5  # the host re-logged the port in without telling us (events lost)
    host.inject(PortOnline(PortRef(T1, 0x020200, 1)))  # a stale announcement
    assert app.session(T1).state is SessionState.SECURE  # serving login 1: a repeat, nothing to do
    host.inject(TargetGone(PortRef(T1, 0x020200, 1)))
    host.inject(PortOnline(PortRef(T1, 0x020200, 1)))
    stale = [b for d, b in host.log if isinstance(b, Response) and b.status is Status.STALE_GENERATION]
    assert len(stale) == 1
    assert host.down(GetTargets)[-1].wwpn == T1
    s = app.session(T1)
    assert s.state is SessionState.SECURE and s.port.generation == t.generation
    assert_keys_crosswise(host, t, app)


def test_app_stop_logs_out_and_forgets_keys():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    host.feed(app.stop())
    assert isinstance(host.down()[-1], AppStop)
    assert host.sa[T1] == {}
    s = app.session(T1)
    assert s.state is SessionState.IDLE and s.ike is None and s.current is None
    assert not app.running
    n = len(host.log)
    host.run_for(20)
    assert len(host.log) == n  # stopped: no keepalive, no rekey, nothing


def test_keepalive_sent_and_host_loss_detected_then_restart():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], keepalive_interval=5.0, keepalive_misses=3)
    host.start()
    host.run_for(20)
    assert len(host.down(Keepalive)) == 4
    assert not host.of(ChannelLost)
    host.silent = True  # the host (or the channel) died
    host.run_for(16)
    lost = host.of(ChannelLost)
    assert len(lost) == 1 and not app.running
    assert app.session(T1).state is SessionState.IDLE and app.session(T1).current is None
    # After the channel handshake again, the lead calls start(): a full re-authentication.
    host.silent = False
    host.sa[T1].clear()
    t.generation += 1
    host.start()
    assert app.session(T1).state is SessionState.SECURE
    assert_keys_crosswise(host, t, app)


def test_ike_retransmission_recovers_a_lost_answer_and_times_out_eventually():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], keepalive_interval=0)
    host.drop_els_rcvd = 1  # the IKE_SA_INIT response is lost
    host.start()
    assert app.session(T1).state is SessionState.NEGOTIATING
    host.tick(2.5)  # retransmit_timeout 2 s: the same IKE_SA_INIT again, answered from the responder's cache
    sends = host.down(ElsSend)
    assert len(sends) >= 2 and sends[0].payload == sends[1].payload
    assert app.session(T1).state is SessionState.SECURE
    # Now the peer goes silent for good during a rekey: AUTH_FAIL(TIMEOUT) after the retries.
    t2 = FakeTarget(T2, 0x020300, PSK2)
    app2, host2 = setup({T2: PSK2}, [t2], keepalive_interval=0)
    host2.drop_els_rcvd = 100
    host2.start()
    host2.run_for(200)
    fails = host2.down(AuthFail)
    assert [f.reason for f in fails][:1] == [AuthFailReason.TIMEOUT]
    first_init = host2.down(ElsSend)[:6]
    assert len({b.payload for b in first_init}) == 1  # 1 send + 5 retransmissions of the same bytes


def test_malformed_or_foreign_auth_els_is_refused_without_state_change():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.drop_els_rcvd = 1
    host.start()
    s = app.session(T1)
    assert s.state is SessionState.NEGOTIATING
    before = (s.ike.state, s.tid, s.retx_data)
    bad = (b"\x90", b"\x90\x00\x22\x01" + bytes(7) + b"\x01", b"\x02\x00\x00\x00", bytes(64))
    for payload in bad:
        host.inject(ElsRcvd(t.ref, 7, payload))
    rejects = [b for b in host.down(ElsReply) if b.action is ElsReplyAction.LS_RJT]
    assert len(rejects) == 4 and app.counters["els_rejected"] == 4
    assert (s.ike.state, s.tid, s.retx_data) == before
    host.inject(ElsRcvd(PortRef(T2, 0x030303, 1), 8, b"\x90"))  # from a port we do not talk to
    assert len([b for b in host.down(ElsReply) if b.action is ElsReplyAction.LS_RJT]) == 5
    host.tick(2.5)  # the retransmission still completes the negotiation
    assert s.state is SessionState.SECURE


def test_unknown_response_ids_and_garbage_events_are_harmless():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    out = app.on_message(Message(Response(MessageType.AUTH_OK, Status.OK), 0, 1, 999, 1))
    assert [type(o) for o in out] == [AppNotice] and app.counters["unexpected"] == 1
    # SA_UPDATE_COMPL nobody waits for, TARGET_GONE for an unknown port: ignored.
    host.inject(SaUpdateCompl(t.ref, 0x12345, SaDirection.RX))
    host.inject(TargetGone(PortRef(T2, 1, 1)))
    assert app.session(T1).state is SessionState.SECURE


def test_auth_ok_retry_later_is_repeated_and_sa_failure_fails_the_session():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], keepalive_interval=0)
    host.auth_ok_busy = 2
    host.start()
    assert app.session(T1).state is SessionState.INSTALLING and len(host.down(AuthOk)) == 1
    host.run_for(1, step=0.5)
    assert len(host.down(AuthOk)) == 3 and app.session(T1).state is SessionState.SECURE
    # An SA install the HBA fails: AUTH_FAIL, never AUTH_OK for it.
    t2 = FakeTarget(T2, 0x020300, PSK2)
    app2, host2 = setup({T2: PSK2}, [t2], keepalive_interval=0)
    host2.sa_fail_next = True
    host2.start()
    assert [b.direction for b in host2.down(SaUpdate)] == [SaDirection.RX]
    assert [f.reason for f in host2.down(AuthFail)] == [AuthFailReason.AUTH_FAILED]
    assert host2.down(AuthOk) == [] and app2.session(T2).state is SessionState.FAILED


def test_session_shutdown_acked_even_after_stop():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    host.feed(app.stop())
    n = len(host.down())
    ev = host.inject(SessionShutdown(t.ref, ShutdownReason.APP_STOP))
    acks = host.down(EventAck)
    assert [(a.event_type, a.event_sequence) for a in acks] == [(MessageType.SESSION_SHUTDOWN, ev.sequence)]
    assert host.down()[n:] == acks  # the ack and nothing else: a stopped app starts nothing


# --- robustness -------------------------------------------------------------------------------------------

_UP = [t for t in MessageType if t.direction is Direction.UPSTREAM and t.kind is not Kind.HEARTBEAT]
_upstream = st.one_of(*(messages_of(t) for t in _UP))


@st.composite
def aimed_messages(draw):
    """Upstream messages, most of them about our target or answering one of our real request ids."""
    msg = draw(_upstream)
    body = msg.body
    if hasattr(body, "port") and draw(st.booleans()):
        gen = draw(st.sampled_from([1, 2]))
        body = dataclasses.replace(body, port=PortRef(T1, 0x020200, gen))
    rid = msg.request_id
    if msg.kind is Kind.RESPONSE and draw(st.booleans()):
        rid = draw(st.integers(1, 40))
    return Message(body, 0, 1, rid, msg.sequence)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(aimed_messages(), max_size=15))
def test_any_upstream_sequence_is_handled_without_forging_keys(msgs):
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], keepalive_interval=0)
    host.start()
    mark = len(host.down())
    for m in msgs:
        out = app.on_message(m)
        out += app.tick(host.clock.now)
        for item in out:
            assert isinstance(item, Body | AppEvent)
            if isinstance(item, Body):
                assert item.TYPE.kind is Kind.REQUEST
                app.sent(item, 1000 + len(host.log))
                host.log.append(("down", item))
    # Without the peer's IKE answers nothing can install new keys or claim authentication.
    later = host.down()[mark:]
    assert not any(isinstance(b, SaUpdate) and b.key for b in later)
    assert not any(isinstance(b, AuthOk) for b in later)
