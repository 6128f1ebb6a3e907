"""EdifEngine request handling with fakes: no sockets, no threads. The HBA port's frames go to a
sans-IO TargetSession and back; the engine's loop calls run at once."""

from __future__ import annotations

import asyncio
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.channel.handler import Deferred
from edifd.edif import ICV_FAILURE_LIMIT, EspTransform, SaDatabase
from edifd.fc import AuthEls, FcpCmnd, Frame, LsAcc, RCtl, els_reply, els_request, fcp_cmnd_frame
from edifd.hba import (
    SENSE_NOT_AUTHORIZED,
    AllowAll,
    InitiatorPort,
    PortConfig,
    RequireAuthWhenSecure,
    SessionState,
)
from edifd.proto import (
    AuthFail,
    AuthNeeded,
    AuthOk,
    Cipher,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    GetPortInfo,
    GetStats,
    GetTargets,
    LinkDown,
    Message,
    PortRef,
    PortState,
    SaDirection,
    SaFlags,
    SaUpdate,
    SaUpdateCompl,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Status,
    TargetGone,
)
from edifd.runtime.engine import EdifEngine
from edifd.scsi import ScsiCommand
from edifd.target import TargetSession

HOST, TGT = 0x3000001B32A0B0C1, 0x2100001B32A0B0C2


class FakePort(InitiatorPort):
    def __init__(self) -> None:
        super().__init__(PortConfig("p", HOST, HOST - 1, ("127.0.0.1", 1)), policy=RequireAuthWhenSecure())
        self.wire: list[Frame] = []
        self.t = 100.0

    def _now(self) -> float:
        return self.t

    def _send(self, frames: list[Frame]) -> None:
        self.wire += frames


class FakeHba:
    def __init__(self, port: FakePort) -> None:
        self.ports = [port]

    def call_soon(self, fn, *args) -> None:
        fn(*args)


class Rig:
    def __init__(self) -> None:
        self.port = FakePort()
        self.target = TargetSession(TGT, TGT - 1, [0], security=True)
        self.target.relay_auth_els = True
        self.engine = EdifEngine(FakeHba(self.port), self.port)  # type: ignore[arg-type]
        self.events: list = []
        self.engine.attach(self.events.append)
        self.engine._start_on_loop()
        self.target_auth: list[Frame] = []

    def req(self, body) -> object:
        d = self.engine.handle(Message(body, 0, 1, 1, 1))
        assert isinstance(d, Deferred)
        got: list = []
        d.bind(got.append)
        self.shuttle()
        return got[0] if got else None

    def shuttle(self) -> None:
        """Move frames both ways until the link is quiet."""
        for _ in range(20):
            out, self.port.wire = self.port.wire, []
            if not out:
                return
            back: list[Frame] = []
            for f in out:
                back += self.target.receive(f)
            for ev in self.target.take_events():
                if type(ev).__name__ == "AuthElsReceived":
                    self.target_auth.append(ev.frame)
            for f in back:
                self.port.push(self.port.session.receive(f, self.port.t))

    def login(self) -> PortRef:
        assert isinstance(self.req(GetPortInfo()), object)
        assert self.req(SecureConnect(PortRef(TGT))) is None or True  # no remote port known yet
        self.port.session.security = True
        self.port.push(self.port.session.connected(self.port.t))
        self.shuttle()
        assert self.port.session.state is SessionState.AUTH_PENDING
        needed = [e for e in self.events if isinstance(e, AuthNeeded)]
        assert len(needed) == 1
        return needed[0].port


def sa(ref: PortRef, spi: int, d: SaDirection) -> SaUpdate:
    return SaUpdate(ref, spi, d, Cipher.AES_GCM_256, os.urandom(32), os.urandom(4))


def run(fn):
    async def main():
        fn()
    asyncio.run(main())


def test_secure_login_sa_install_and_auth_ok_gate():
    def body():
        r = Rig()
        ref = r.login()
        assert ref.wwpn == TGT and ref.generation == 1 and ref.port_id == r.port.session.remote_id
        assert r.req(AuthOk(ref)).status is Status.RETRY_LATER  # no SA yet
        assert r.req(sa(ref, 0x101, SaDirection.RX)).status is Status.OK
        assert r.req(AuthOk(ref)).status is Status.RETRY_LATER  # RX only: qla prli_status 0
        assert r.port.session.state is SessionState.AUTH_PENDING and not r.port.wire
        assert r.req(sa(ref, 0x202, SaDirection.TX)).status is Status.OK
        compl = [e for e in r.events if isinstance(e, SaUpdateCompl)]
        assert [(c.direction, c.spi) for c in compl] == [(SaDirection.RX, 0x101), (SaDirection.TX, 0x202)]
        r.port.wire.clear()
        r.engine.handle(Message(AuthOk(ref), 0, 1, 1, 1))
        prli = [f for f in r.port.wire if f.header.r_ctl == RCtl.ELS_REQ and f.payload[0] == 0x20]
        assert prli and r.port.session.state is SessionState.PRLI
        # The session's transform is this login's ESP stage.
        assert r.port.session.transform is r.port.security.login_sas.esp
    run(body)


def test_refusals_change_nothing():
    def body():
        r = Rig()
        ref = r.login()
        stale = PortRef(ref.wwpn, ref.port_id, ref.generation + 1)
        assert r.req(sa(stale, 0x101, SaDirection.RX)).status is Status.STALE_GENERATION
        assert r.req(sa(PortRef(0x1234), 0x101, SaDirection.RX)).status is Status.NO_SUCH_PORT
        unknown = ElsReply(ref, 77, ElsReplyAction.LS_ACC, bytes(LsAcc().pack()))
        assert r.req(unknown).status is Status.INVALID_PARAM
        assert not r.port.security.query_sa().sas["rx"]
        t = r.req(GetTargets())
        assert t.total == 1 and t.entries[0].port == ref
    run(body)


def test_auth_els_relay_both_ways():
    def body():
        r = Rig()
        ref = r.login()
        ike = AuthEls(0x22, 0x1234, b"ike-sa-init")
        d = r.engine.handle(Message(ElsSend(ref, ike.pack()), 0, 1, 1, 1))
        got: list = []
        d.bind(got.append)
        r.shuttle()
        assert r.target_auth and r.target_auth[0].fc4_payload == ike.pack()
        # The target answers the exchange with LS_ACC: the agent's ELS_RESPONSE.
        r.port.push(r.port.session.receive(els_reply(r.target_auth[0], LsAcc(), rx_id=9), r.port.t))
        assert isinstance(got[0], ElsResponse) and got[0].result is ElsResult.LS_ACC
        # The target's own AUTH_ELS request becomes ELS_RCVD; ELS_REPLY answers it on its exchange.
        req = els_request(s_id=r.port.session.remote_id, d_id=r.port.session.local_id, ox_id=0x55,
                          els=AuthEls(0x22, 0x1234, b"resp"))
        r.port.push(r.port.session.receive(req, r.port.t))
        rcvd = [e for e in r.events if isinstance(e, ElsRcvd)]
        assert rcvd and rcvd[0].payload == req.fc4_payload
        answer = ElsReply(ref, rcvd[0].rx_exchange, ElsReplyAction.LS_ACC, b"\x02\0\0\0")
        assert r.req(answer).status is Status.OK
    run(body)


def test_auth_fail_holds_the_login_and_clears_keys():
    def body():
        r = Rig()
        ref = r.login()
        r.req(sa(ref, 0x101, SaDirection.RX))
        sadb = r.port.security.login_sas.sadb
        rx = sadb.sas(SaDirection.RX)[0]
        r.port.wire.clear()
        assert r.req(AuthFail(ref)).status is Status.OK
        assert r.port.session.state is SessionState.GONE and r.engine.login is None
        assert not sadb.sas(SaDirection.RX) and not rx.alive
        shut = [e for e in r.events if isinstance(e, SessionShutdown)]
        assert shut and shut[0].reason is ShutdownReason.AUTH_FAIL
        done: list = []
        r.port.submit(0, ScsiCommand(bytes(6)), done.append)
        assert done[0].sense == SENSE_NOT_AUTHORIZED
    run(body)


def test_link_down_ends_the_secure_login():
    def body():
        r = Rig()
        r.login()
        r.port.session.disconnected(r.port.t, "link down")
        r.port.push([])
        assert any(isinstance(e, LinkDown) for e in r.events)
        shut = [e for e in r.events if isinstance(e, SessionShutdown)]
        assert shut and shut[0].reason is ShutdownReason.LINK_DOWN
        assert r.req(AuthOk(PortRef(TGT, 0, 1))).status in (Status.STALE_GENERATION, Status.REFUSED)
    run(body)


def test_no_key_material_in_status_or_events():
    def body():
        r = Rig()
        ref = r.login()
        u = sa(ref, 0x101, SaDirection.RX)
        r.req(u)
        text = repr(r.engine.status()) + repr(r.events)
        assert u.key.hex() not in text and u.key not in text.encode()
    run(body)


def _secure_ready(r: Rig) -> PortRef:
    ref = r.login()
    r.req(sa(ref, 0x101, SaDirection.RX))
    r.req(sa(ref, 0x202, SaDirection.TX))
    r.target.policy = AllowAll()  # the sans-IO target here does not authenticate: let PRLI through
    assert r.req(AuthOk(ref)).status is Status.OK
    assert r.port.session.state is SessionState.READY
    return ref


def test_rscn_and_refused_relogin_give_target_gone():
    def body():
        r = Rig()
        ref = _secure_ready(r)
        for f in r.target.go_offline():  # RSCN naming the target, then LS_RJT to the re-PLOGI
            r.port.push(r.port.session.receive(f, r.port.t))
        r.shuttle()
        assert r.port.session.state is SessionState.GONE
        shut = [e for e in r.events if isinstance(e, SessionShutdown)]
        assert [s.reason for s in shut] == [ShutdownReason.PORT_GONE]
        gone = [e for e in r.events if isinstance(e, TargetGone)]
        assert len(gone) == 1 and gone[0].port.wwpn == ref.wwpn
        assert r.req(GetTargets()).entries[0].state is PortState.OFFLINE
    run(body)


def test_icv_failures_tear_the_session_down_and_log_in_again():
    async def body():
        r = Rig()
        ref = _secure_ready(r)
        esp = r.port.security.login_sas.esp
        # A sender with the right SPI and the wrong key: every frame fails its ICV.
        forger = EspTransform(SaDatabase())
        forger.sadb.install(SaDirection.TX, 0x101, Cipher.AES_GCM_256, os.urandom(32), os.urandom(4))
        s = r.port.session
        for ox in range(1, ICV_FAILURE_LIMIT + 1):
            cmnd = FcpCmnd(lun=bytes(8), cdb=bytes(6), dl=0)
            bad = forger.outbound(fcp_cmnd_frame(s_id=s.remote_id, d_id=s.local_id, ox_id=ox, cmnd=cmnd))
            assert esp.inbound(bad) is None
        r.port.push([])
        await asyncio.sleep(0)  # the teardown runs on the loop, after the frame batch
        r.shuttle()
        shut = [e for e in r.events if isinstance(e, SessionShutdown)]
        assert [x.reason for x in shut] == [ShutdownReason.KEYS_REMOVED]
        assert r.engine.counters.teardowns == 1 and esp.counters.icv_failures == ICV_FAILURE_LIMIT
        needed = [e for e in r.events if isinstance(e, AuthNeeded)]
        assert [n.port.generation for n in needed] == [ref.generation, ref.generation + 1]
        assert not r.port.security.query_sa().both_confirmed  # the new login starts without SAs
    asyncio.run(body())


def test_app_stop_logs_out_and_secure_connect_logs_in_again():
    def body():
        r = Rig()
        ref = _secure_ready(r)
        r.port.wire.clear()
        r.engine.app_stopped(Message(GetPortInfo(), 0, 1, 1, 1))
        assert r.port.wire and r.port.wire[0].payload[0] == 0x05  # LOGO
        assert r.port.session.state is SessionState.GONE and not r.port.session.security
        assert not any(isinstance(e, SessionShutdown) for e in r.events)  # nobody to tell
        r.shuttle()
        # The application comes back: SECURE_CONNECT (generation 0 = the current login) -> PLOGI
        # with the security bit -> a new AUTH_NEEDED.
        assert r.req(SecureConnect(PortRef(ref.wwpn))).status is Status.OK
        needed = [e for e in r.events if isinstance(e, AuthNeeded)]
        assert len(needed) == 2 and needed[1].port.generation == ref.generation + 1
        assert r.port.session.security and r.port.session.state is SessionState.AUTH_PENDING
    run(body)


def test_get_stats_counts_protected_bytes():
    def body():
        r = Rig()
        ref = _secure_ready(r)
        st = r.req(GetStats())
        assert st.total == 1 and st.entries[0].port == ref and st.entries[0].tx_bytes == 0
    run(body)


def test_the_port_holds_the_sas_and_its_timer_ends_a_delayed_rx_delete():
    def body():
        r = Rig()
        assert r.port.security.query_sa() is None  # no login yet
        ref = _secure_ready(r)
        sec = r.port.security
        assert sec.add_sa(SaDirection.RX, 0x103, Cipher.AES_GCM_256, os.urandom(32), os.urandom(4)).ok
        assert r.req(SaUpdate(ref, 0x101, SaDirection.RX, Cipher.AES_GCM_256, flags=SaFlags.DELETE)).status \
            is Status.OK
        q = sec.query_sa()
        assert q.both_confirmed and q.sas["pending_rx_delete"] == 0x101 and len(q.sas["rx"]) == 2
        assert sec.next_deadline() == r.port.t + 20.0
        r.events.clear()
        r.port.t += 20.0
        r.port.push([])  # what the port's timer does at that deadline
        done = [(e.spi, e.direction) for e in r.events if isinstance(e, SaUpdateCompl)]
        assert done == [(0x101, SaDirection.RX)]
        assert [sa["spi"] for sa in sec.query_sa().sas["rx"]] == [0x103]
        old = sec.login_sas
        r.port.session.disconnected(r.port.t, "link down")
        r.port.push([])
        assert sec.query_sa() is None and not old.sadb.sas(SaDirection.TX)  # cleared with the login
        assert sec.add_sa(SaDirection.RX, 0x105, Cipher.AES_GCM_256, os.urandom(32),
                          os.urandom(4)).status is Status.REFUSED
    run(body)


_OPS = st.lists(st.tuples(st.sampled_from(["connect", "rx", "tx", "del_rx", "del_tx", "auth_ok", "auth_fail",
                                            "els_reply", "stale", "app_stop", "link_down", "link_up"]),
                          st.integers(1, 3)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_any_request_sequence_is_answered_and_prli_only_after_both_sas(ops):
    def body():
        r = Rig()
        ref = r.login()
        for op, n in ops:
            cur = r.engine._ref() or ref
            r.port.wire.clear()
            body_ = {
                "connect": SecureConnect(PortRef(ref.wwpn)),
                "rx": sa(cur, n, SaDirection.RX), "tx": sa(cur, 10 + n, SaDirection.TX),
                "del_rx": SaUpdate(cur, n, SaDirection.RX, Cipher.AES_GCM_256, flags=SaFlags.DELETE),
                "del_tx": SaUpdate(cur, 10 + n, SaDirection.TX, Cipher.AES_GCM_256, flags=SaFlags.DELETE),
                "auth_ok": AuthOk(cur), "auth_fail": AuthFail(cur),
                "els_reply": ElsReply(cur, n, ElsReplyAction.LS_ACC, b"\x02\0\0\0"),
                "stale": AuthOk(PortRef(cur.wwpn, cur.port_id, cur.generation + n)),
            }.get(op)
            if op == "app_stop":
                r.engine.app_stopped(Message(GetPortInfo(), 0, 1, 1, 1))
            elif op == "link_down":
                r.port.session.disconnected(r.port.t, "link down")
                r.port.push([])
            elif op == "link_up":
                r.port.push(r.port.session.connected(r.port.t))
            else:
                d = r.engine.handle(Message(body_, 0, 1, 1, 1))
                answers: list = []
                d.bind(answers.append)
                assert len(answers) == 1  # every request is answered, at once here
                prli = [f for f in r.port.wire if f.header.r_ctl == RCtl.ELS_REQ and f.payload[0] == 0x20]
                if prli:
                    assert op == "auth_ok" and answers[0].status is Status.OK
                    assert r.port.security.query_sa().both_confirmed
            r.shuttle()
    run(body)


def test_secure_session_setup_latency_is_observed_once_per_login():
    """From the secure PLOGI to the first AUTH_OK accepted (edifd_secure_session_setup_seconds); a
    rekey's AUTH_OK on a ready session adds nothing."""
    def body():
        r = Rig()
        ref = _secure_ready(r)
        snap = r.engine.status()["setup_latency"]
        assert snap["count"] == 1 and snap["sum"] >= 0 and snap["buckets"][-1][1] == 1
        assert r.req(AuthOk(ref)).status is Status.OK  # online already: the rekey path
        assert r.engine.status()["setup_latency"]["count"] == 1
    run(body)
