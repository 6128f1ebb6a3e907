"""SecurityApp against a scripted fake host that plays edifd at the message level.

The fake host answers GET_PORT_INFO / GET_TARGETS / SECURE_CONNECT, raises AUTH_NEEDED, relays ELS_SEND
payloads to a real IKE responder (through the real responder orchestration, AuthResponder) and returns
the responder's IKE messages as ELS_RCVD, answers SA_UPDATE with SA_UPDATE_COMPL, and keeps an SA table
per target with the HBA's rule of at most 2 SAs per direction. Everything runs in-process on a fake clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.ike.codes import DhGroup
from edifd.proto import (
    AppStartAnswer,
    AppStop,
    AuthFail,
    AuthFailReason,
    AuthNeeded,
    AuthOk,
    Body,
    Cipher,
    CipherMask,
    Direction,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    EventAck,
    GetPortInfo,
    GetStats,
    GetTargets,
    HostReset,
    Keepalive,
    Kind,
    LinkDown,
    LinkState,
    LinkUp,
    Message,
    MessageType,
    PortInfo,
    PortOffline,
    PortOnline,
    PortRef,
    PortState,
    Response,
    Resync,
    RoleFlags,
    SaDirection,
    SaFlags,
    SaStatus,
    SaUpdate,
    SaUpdateCompl,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Stats,
    StatsEntry,
    Status,
    TargetEntry,
    TargetGone,
    TargetList,
    decode,
    encode,
)
from edifd.secapp.app import (
    AppEvent,
    AppNotice,
    ChannelLost,
    SecurityApp,
    SessionFailed,
    SessionRekeyed,
    SessionSecure,
    SessionState,
)
from edifd.secapp.config import (
    IkePolicy,
    PeerPolicy,
    PskCredentials,
    RekeyPolicy,
    SecConfig,
    load_cert_credentials,
)
from edifd.secapp.relay import unwrap_ike, wrap_ike
from edifd.secapp.responder import (
    AuthResponder,
    ElsAnswer,
    ElsRequest,
    InstallSa,
    PeerAuthFailed,
    RemoveSa,
)
from tests.support.clock import Clock
from tests.support.strategies import messages_of

HOST_WWPN = 0x2000001B32A0B0C1
HOST_PID = 0x010100
T1 = 0x2100001B32A0B0C2
T2 = 0x2100001B32A0B0C3
PSK1 = b"correct horse battery staple 1!!"
PSK2 = b"another long pre-shared secret 22"
CHANNEL_KEY = bytes(range(32))


def seeded_rng(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


class FakeTarget:
    def __init__(self, wwpn: int, pid: int, psk: bytes | None = None, creds=None, *, seed: int = 0):
        self.wwpn, self.pid, self.generation = wwpn, pid, 1
        self.online = True
        self.creds = creds or PskCredentials(psk)
        self.responder = AuthResponder(
            wwpn, {HOST_WWPN: PeerPolicy(HOST_WWPN, self.creds)}, IkePolicy(), rng=seeded_rng(seed)
        )
        self.installed: dict[int, InstallSa] = {}  # responder side: spi_in -> InstallSa
        self.removed: list[RemoveSa] = []
        self.failures: list[PeerAuthFailed] = []
        self.tx_bytes = self.rx_bytes = 0

    @property
    def ref(self) -> PortRef:
        return PortRef(self.wwpn, self.pid, self.generation)


class FakeHost:
    """edifd at the message level, with a log of every message in both directions."""

    def __init__(self, app: SecurityApp, clock: Clock, targets: list[FakeTarget], *, page_size: int = 200):
        self.app, self.clock = app, clock
        self.targets = {t.wwpn: t for t in targets}
        self.page_size = page_size
        self.log: list[tuple[str, Body]] = []
        self.upstream: list[Message] = []
        self.next_rid = 1
        self.seq = 0
        self.rx_exchange = 100
        self.sa: dict[int, dict[tuple[SaDirection, int], SaUpdate]] = {t: {} for t in self.targets}
        self.max_per_direction = 0
        self.events: list = []  # AppEvents seen
        self.drop_els_rcvd = 0  # lose the next N ELS_RCVD (a frame lost on the link)
        self.silent = False  # the host stops answering
        self.started = False
        self.link_up = True
        self.auth_ok_busy = 0  # answer the next N AUTH_OKs with RETRY_LATER
        self.sa_fail_next = False  # fail the next SA_UPDATE in the HBA (SA_UPDATE_COMPL FAILED)
        self.logo_on_auth_fail = False  # qla2xxx: AUTH_FAIL -> LOGO -> PORT_OFFLINE + SESSION_SHUTDOWN
        self.hold_compl = False  # keep SA_UPDATE_COMPL events back until release()
        self.defer_rx_delete = False  # keep old RX SAs (and their slot) until finish_rx_deletes(), as qla2xxx
        self.rx_deletes: list[SaUpdate] = []
        self.held: list[Body] = []

    # -- driving the app --

    def feed(self, items: list) -> None:
        for item in items:
            if isinstance(item, Body):
                rid = self.next_rid
                self.next_rid += 1
                self.app.sent(item, rid)
                self.log.append(("down", item))
                if not self.silent:
                    self.handle(item, rid)
            else:
                self.events.append(item)
        self.pump()

    def pump(self) -> None:
        while self.upstream:
            msg = self.upstream.pop(0)
            # Every message crosses the real codec, so the app only ever sees what decode() accepts.
            msg = decode(encode(msg, CHANNEL_KEY), CHANNEL_KEY)
            self.log.append(("up", msg.body))
            self.feed(self.app.on_message(msg))

    def start(self) -> None:
        self.feed(self.app.start())

    def tick(self, dt: float = 0.0) -> None:
        self.clock.now += dt
        self.feed(self.app.tick(self.clock.now))

    def run_for(self, seconds: float, step: float = 1.0) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.tick(step)

    def event(self, body: Body) -> Message:
        self.seq += 1
        msg = Message(body, 0, 1, 0, self.seq)
        self.upstream.append(msg)
        return msg

    def inject(self, body: Body) -> Message:
        msg = self.event(body)
        self.pump()
        return msg

    def respond(self, rid: int, body: Body) -> None:
        self.seq += 1
        self.upstream.append(Message(body, 0, 1, rid, self.seq))

    # -- edifd's behaviour --

    def handle(self, body: Body, rid: int) -> None:
        ok = Response(body.TYPE, Status.OK)
        port = getattr(body, "port", None)
        t = self.targets.get(port.wwpn) if isinstance(port, PortRef) else None
        if t is not None and not isinstance(body, EventAck | AuthFail):
            # edifd refuses requests naming an older login of the port (0 = any, for SECURE_CONNECT only)
            allowed = (t.generation, 0) if isinstance(body, SecureConnect) else (t.generation,)
            if port.generation not in allowed or port.port_id != t.pid:
                self.respond(rid, Response(body.TYPE, Status.STALE_GENERATION))
                return
        if isinstance(body, GetPortInfo):
            link = LinkState.UP if self.link_up else LinkState.DOWN
            info = PortInfo(HOST_WWPN, HOST_WWPN - 1, HOST_PID, link, remote_ports=len(self.targets))
            self.respond(rid, info)
        elif isinstance(body, GetTargets):
            listed = [t for t in self.targets.values() if t.online]
            page = listed[body.start : body.start + self.page_size]
            entries = tuple(TargetEntry(t.ref, RoleFlags.TARGET, PortState.ONLINE) for t in page)
            self.respond(rid, TargetList(len(listed), body.start, entries))
        elif isinstance(body, SecureConnect):
            t = self.targets.get(body.port.wwpn)
            if t is None or not t.online:
                self.respond(rid, Response(body.TYPE, Status.NO_SUCH_PORT))
                return
            self.respond(rid, ok)
            self.event(AuthNeeded(t.ref, RoleFlags.TARGET))
        elif isinstance(body, ElsSend):
            self.relay(body, rid)
        elif isinstance(body, ElsReply):
            assert body.action is ElsReplyAction.LS_ACC or body.payload[:1] == b"\x01"
            self.respond(rid, ok)
        elif isinstance(body, SaUpdate):
            self.sa_update(body, rid)
        elif isinstance(body, AuthOk):
            table = self.sa[body.port.wwpn]
            both = {d for d, _ in table} == {SaDirection.RX, SaDirection.TX}
            if self.auth_ok_busy:
                self.auth_ok_busy -= 1
                both = False
            self.respond(rid, ok if both else Response(body.TYPE, Status.RETRY_LATER))
        elif isinstance(body, GetStats):
            entries = tuple(StatsEntry(t.ref, 0, t.tx_bytes, t.rx_bytes) for t in self.targets.values())
            self.respond(rid, Stats(len(entries), 0, entries))
        elif isinstance(body, AppStop):
            for table in self.sa.values():
                table.clear()
            self.respond(rid, ok)
        elif isinstance(body, AuthFail) and self.logo_on_auth_fail:
            self.respond(rid, ok)
            t = self.targets[body.port.wwpn]
            t.generation += 1
            self.event(PortOffline(t.ref))
            self.event(SessionShutdown(t.ref, ShutdownReason.LOGO))
        elif isinstance(body, AuthFail | EventAck | Keepalive | Resync):
            self.respond(rid, ok)
        else:
            raise AssertionError(f"unexpected request {body.TYPE.name}")

    def relay(self, body: ElsSend, rid: int) -> None:
        t = self.targets[body.port.wwpn]
        outs = t.responder.on_auth_els(HOST_WWPN, body.payload, local_port_id=t.pid, remote_port_id=HOST_PID)
        answer = outs[0]
        assert isinstance(answer, ElsAnswer)
        result = ElsResult.LS_ACC if answer.accepted else ElsResult.LS_RJT
        self.respond(rid, ElsResponse(t.ref, result, answer.payload))
        for out in outs[1:]:
            if isinstance(out, ElsRequest):
                if self.drop_els_rcvd:
                    self.drop_els_rcvd -= 1
                    continue
                self.rx_exchange += 1
                self.event(ElsRcvd(t.ref, self.rx_exchange, out.payload))
            elif isinstance(out, InstallSa):
                t.installed[out.child.spi_in] = out
            elif isinstance(out, RemoveSa):
                t.installed.pop(out.spi_in, None)
                t.removed.append(out)
            elif isinstance(out, PeerAuthFailed):
                t.failures.append(out)

    def sa_update(self, body: SaUpdate, rid: int) -> None:
        table = self.sa[body.port.wwpn]
        key = (body.direction, body.spi)
        if self.sa_fail_next:
            self.sa_fail_next = False
            self.respond(rid, Response(body.TYPE, Status.OK))
            self.event(SaUpdateCompl(body.port, body.spi, body.direction, SaStatus.FAILED, 0x66, body.flags))
            return
        if SaFlags.DELETE in body.flags and self.defer_rx_delete and body.direction is SaDirection.RX:
            self.rx_deletes.append(body)  # answered OK now; the SA stays until the peer uses the new one
            self.respond(rid, Response(body.TYPE, Status.OK))
            return
        if SaFlags.DELETE in body.flags:
            table.pop(key, None)
        else:
            if key not in table and sum(1 for d, _ in table if d is body.direction) >= 2:
                self.respond(rid, Response(body.TYPE, Status.LIMIT))
                return
            table[key] = body
        self.max_per_direction = max(
            self.max_per_direction, *(sum(1 for d, _ in table if d is x) for x in SaDirection)
        )
        self.respond(rid, Response(body.TYPE, Status.OK))
        compl = SaUpdateCompl(body.port, body.spi, body.direction, SaStatus.SUCCESS, 0, body.flags)
        if self.hold_compl:
            self.held.append(compl)
        else:
            self.event(compl)

    def finish_rx_deletes(self) -> None:
        deletes, self.rx_deletes = self.rx_deletes, []
        for body in deletes:
            self.sa[body.port.wwpn].pop((body.direction, body.spi), None)
            self.event(SaUpdateCompl(body.port, body.spi, body.direction, SaStatus.SUCCESS, 0, body.flags))
        self.pump()

    def release(self) -> None:
        self.hold_compl = False
        held, self.held = self.held, []
        for body in held:
            self.event(body)
        self.pump()

    # -- views for assertions --

    def down(self, kind: type | None = None) -> list:
        return [b for d, b in self.log if d == "down" and (kind is None or isinstance(b, kind))]

    def names(self) -> list[str]:
        out = []
        for d, b in self.log:
            name = b.TYPE.name
            if isinstance(b, ElsSend | ElsRcvd):
                name += f"[{b.payload[2]:#04x}]"
            elif isinstance(b, SaUpdate):
                op = "DEL" if SaFlags.DELETE in b.flags else ("REKEY" if SaFlags.REKEY in b.flags else "ADD")
                name += f"[{b.direction.name} {op}]"
            out.append(("v " if d == "down" else "^ ") + name)
        return out

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def make_config(peers: dict[int, bytes | object | None], **kw) -> SecConfig:
    policies = {}
    for w, c in peers.items():
        creds = PskCredentials(c) if isinstance(c, bytes) else c
        policies[w] = PeerPolicy(w, creds)
    kw.setdefault("rekey", RekeyPolicy(lifetime=3600.0, bytes=0))
    return SecConfig(peers=policies, **kw)


def setup(peers: dict, targets: list[FakeTarget], *, seed: int = 1, page_size: int = 200, **kw):
    clock = Clock()
    app = SecurityApp(make_config(peers, **kw), clock, rng=seeded_rng(seed))
    host = FakeHost(app, clock, targets, page_size=page_size)
    return app, host


def assert_keys_crosswise(host: FakeHost, t: FakeTarget, app: SecurityApp, key_len: int = 16) -> None:
    """Our RX is their TX and the other way round, byte for byte, for the pair in use."""
    s = app.session(t.wwpn)
    table = host.sa[t.wwpn]
    rx = table[(SaDirection.RX, s.current.spi_in)]
    tx = table[(SaDirection.TX, s.current.spi_out)]
    theirs = t.installed[s.current.spi_out].child  # their inbound SPI is our outbound one
    assert theirs.spi_out == rx.spi and theirs.spi_in == tx.spi
    assert rx.key == theirs.key_out and rx.salt == theirs.salt_out
    assert tx.key == theirs.key_in and tx.salt == theirs.salt_in
    assert len(rx.key) == key_len and rx.key != tx.key


# --- the whole flow ---------------------------------------------------------------------------------------


def test_full_flow_message_order_and_keys():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    assert host.names() == [
        "v GET_PORT_INFO", "^ PORT_INFO",
        "v GET_TARGETS", "^ TARGET_LIST",
        "v SECURE_CONNECT", "^ RESPONSE", "^ AUTH_NEEDED",
        "v ELS_SEND[0x22]", "^ ELS_RESPONSE", "^ ELS_RCVD[0x22]",
        "v ELS_REPLY", "v ELS_SEND[0x23]", "^ RESPONSE", "^ ELS_RESPONSE", "^ ELS_RCVD[0x23]",
        "v ELS_REPLY", "v SA_UPDATE[RX ADD]", "^ RESPONSE", "^ RESPONSE", "^ SA_UPDATE_COMPL",
        "v SA_UPDATE[TX ADD]", "^ RESPONSE", "^ SA_UPDATE_COMPL",
        "v AUTH_OK", "^ RESPONSE",
    ]
    assert app.session(T1).state is SessionState.SECURE
    secure = host.of(SessionSecure)
    assert len(secure) == 1 and secure[0].wwpn == T1
    assert_keys_crosswise(host, t, app)
    # The ELS relay: LS_ACC for every received AUTH_ELS, one T_ID for the whole IKE SA.
    replies = host.down(ElsReply)
    assert all(r.action is ElsReplyAction.LS_ACC and r.payload == b"\x02\x00\x00\x00" for r in replies)
    tids = {unwrap_ike(b.payload)[0] for b in host.down(ElsSend)}
    tids |= {unwrap_ike(b.payload)[0] for d, b in host.log if isinstance(b, ElsRcvd)}
    assert len(tids) == 1 and 0 not in tids


def test_esp_proposals_follow_the_host_cipher_mask():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    answer = AppStartAnswer(epoch=7, proof=bytes(32), cipher_mask=CipherMask.AES_GCM_256)
    host.feed(app.start(answer))
    adds = host.down(SaUpdate)
    assert [b.cipher for b in adds] == [Cipher.AES_GCM_256] * 2 and all(len(b.key) == 32 for b in adds)
    assert_keys_crosswise(host, t, app, key_len=32)
    # A host that supports none of them: we say so and keep the configured proposals.
    app2, host2 = setup({T1: PSK1}, [FakeTarget(T1, 0x020200, PSK1)])
    host2.feed(app2.start(AppStartAnswer(epoch=7, proof=bytes(32), cipher_mask=CipherMask(0))))
    assert any("none of the configured ESP ciphers" in n.detail for n in host2.of(AppNotice))
    assert [b.cipher for b in host2.down(SaUpdate)] == [Cipher.AES_GCM_128] * 2


def test_secrets_never_in_reprs_or_events():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    st_ = app.status()
    row = st_["targets"]["21:00:00:1b:32:a0:b0:c2"]
    assert row["state"] == "secure" and row["spi_in"] == f"{app.session(T1).current.spi_in:08x}"
    assert row["cipher"] == "AES_GCM_128" and row["sa_age_s"] == 0.0 and st_["running"] is True
    adds = [b for b in host.down(SaUpdate) if b.key]
    keys = [b.key for b in adds] + [b.salt for b in adds]
    texts = [repr(app), repr(app.config), repr(app.sessions), repr(st_), *map(repr, host.events)]
    texts += [repr(b) for _, b in host.log] + [str(e) for e in host.events]
    for text in texts:
        assert PSK1.decode() not in text and repr(PSK1) not in text
        for k in keys:
            assert k.hex() not in text and repr(k) not in text


def test_wrong_psk_auth_fail_and_no_sa_update_ever():
    t = FakeTarget(T1, 0x020200, PSK2)  # the target expects another key
    app, host = setup({T1: PSK1}, [t], auth_retry_backoff=30.0, reconnect_delay=1.0)
    host.logo_on_auth_fail = True  # the logout that follows must not cut the backoff short
    host.start()
    assert len(host.down(EventAck)) == 1
    fails = host.down(AuthFail)
    assert len(fails) == 1 and fails[0].port.wwpn == T1
    assert fails[0].reason is AuthFailReason.PEER_REJECTED  # the responder refused our AUTH
    assert t.failures and app.session(T1).state is SessionState.FAILED
    assert host.of(SessionFailed)[0].reason is AuthFailReason.PEER_REJECTED
    # Backoff: nothing for 29 s, then one more attempt, then twice as long.
    n = len(host.log)
    host.run_for(29)  # failed at t0; now t0 + 29
    assert not any(isinstance(b, SecureConnect | ElsSend) for _, b in host.log[n:])
    host.run_for(2)  # the retry at t0 + 30 fails again; the next one waits 60 s
    assert len(host.down(AuthFail)) == 2
    host.run_for(58)
    assert len(host.down(AuthFail)) == 2
    host.run_for(2)
    assert len(host.down(AuthFail)) == 3
    assert host.down(SaUpdate) == [] and host.down(AuthOk) == []


def test_two_targets_one_wrong_psk_other_fine_paged_target_list():
    good = FakeTarget(T1, 0x020200, PSK1, seed=5)
    bad = FakeTarget(T2, 0x020300, b"the target has a different key!!", seed=6)
    app, host = setup({T1: PSK1, T2: PSK2}, [good, bad], page_size=1)
    host.start()
    assert len(host.down(GetTargets)) == 2  # two pages of one entry
    assert app.session(T1).state is SessionState.SECURE
    assert app.session(T2).state is SessionState.FAILED
    assert [f.port.wwpn for f in host.down(AuthFail)] == [T2]
    assert {b.port.wwpn for b in host.down(SaUpdate)} == {T1}
    assert_keys_crosswise(host, good, app)
    assert not bad.installed


def test_unconfigured_and_skipped_targets():
    t1 = FakeTarget(T1, 0x020200, PSK1)
    t2 = FakeTarget(T2, 0x020300, PSK2)
    app, host = setup({T1: None}, [t1, t2])  # T1 is `skip = true`, T2 unknown
    host.start()
    assert host.down(SecureConnect) == []
    assert len(host.of(AppNotice)) == 2
    host.inject(AuthNeeded(t2.ref))  # the host logged in securely anyway: refuse by policy
    fails = host.down(AuthFail)
    assert [(f.port.wwpn, f.reason) for f in fails] == [(T2, AuthFailReason.POLICY)]
    assert host.down(ElsSend) == []


# --- rekey ------------------------------------------------------------------------------------------------


def _rekey_tail(host: FakeHost, start: int) -> list[str]:
    return [n for n in host.names()[start:] if n.startswith("v ") and "KEEPALIVE" not in n]


def test_rekey_by_lifetime_make_before_break():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], rekey=RekeyPolicy(lifetime=600.0, bytes=0), keepalive_interval=0)
    host.start()
    old = app.session(T1).current
    mark = len(host.log)
    host.run_for(590, step=10)
    assert len(host.log) == mark  # nothing before the lifetime
    host.run_for(11)
    assert _rekey_tail(host, mark) == [
        "v ELS_SEND[0x24]", "v ELS_REPLY",
        "v SA_UPDATE[RX REKEY]", "v SA_UPDATE[TX REKEY]", "v AUTH_OK",
        "v SA_UPDATE[TX DEL]", "v SA_UPDATE[RX DEL]",
        "v ELS_SEND[0x25]", "v ELS_REPLY",
    ]
    new = app.session(T1).current
    assert new.spi_in != old.spi_in and new.spi_out != old.spi_out
    assert host.max_per_direction == 2  # the overlap, never more
    assert set(host.sa[T1]) == {(SaDirection.RX, new.spi_in), (SaDirection.TX, new.spi_out)}
    assert set(t.installed) == {new.spi_out}  # the responder removed the old pair on the IKE Delete
    assert [r.spi_in for r in t.removed] == [old.spi_out]
    rekeyed = host.of(SessionRekeyed)
    assert [(r.old_spi_in, r.new_spi_in, r.trigger) for r in rekeyed] == [
        (old.spi_in, new.spi_in, "lifetime")
    ]
    assert_keys_crosswise(host, t, app)
    # The TX switch happens only after the new RX is confirmed, and old TX goes before old RX.
    deletes = [b for b in host.down(SaUpdate) if SaFlags.DELETE in b.flags]
    assert [(b.direction, b.spi) for b in deletes] == [
        (SaDirection.TX, old.spi_out),
        (SaDirection.RX, old.spi_in),
    ]
    # A second lifetime later it happens again.
    host.run_for(601, step=10)
    assert len(host.of(SessionRekeyed)) == 2
    assert_keys_crosswise(host, t, app)


def test_next_rekey_waits_for_the_old_rx_sa_to_leave_the_hba():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], rekey=RekeyPolicy(lifetime=10.0, bytes=0), keepalive_interval=0)
    host.defer_rx_delete = True
    host.start()
    host.run_for(10)
    assert len(host.of(SessionRekeyed)) == 1 and len(host.rx_deletes) == 1
    host.run_for(15)  # the lifetime has passed again, but the old RX SA still holds the second slot
    assert len(host.of(SessionRekeyed)) == 1
    host.finish_rx_deletes()  # the peer was seen on the new SA: the host removes the old RX SA
    host.run_for(1)
    assert len(host.of(SessionRekeyed)) == 2
    assert host.max_per_direction == 2 and host.down(AuthFail) == []
    # A host that never reports the removal does not block rekeying for ever: after 30 s the app tries;
    # a host that still holds the slot refuses the third RX SA (LIMIT) and the session starts over.
    host.run_for(29)
    assert len(host.down(SaUpdate)) == 10
    host.run_for(2)
    assert [f.reason for f in host.down(AuthFail)] == [AuthFailReason.AUTH_FAILED]
    assert "LIMIT" in host.of(SessionFailed)[0].detail and host.max_per_direction == 2


def test_refused_rekey_keeps_the_pair_and_retries_later():
    t = FakeTarget(T1, 0x020200, PSK1)
    rekey = RekeyPolicy(lifetime=600.0, bytes=0)
    app, host = setup({T1: PSK1}, [t], rekey=rekey, keepalive_interval=0, auth_retry_backoff=30.0)
    host.start()
    old = app.session(T1).current
    peer = t.responder._peers[HOST_WWPN]
    strict = peer.ike.config
    peer.ike.config = dataclasses.replace(strict, child_pfs_group=DhGroup.CURVE25519)  # demands PFS now
    host.run_for(600, step=10)  # the lifetime ends at t0 + 600: the target refuses the rekey
    assert any("rekey" in n.detail and "refused" in n.detail for n in host.of(AppNotice))
    s = app.session(T1)
    assert s.state is SessionState.SECURE and s.current is old and host.down(AuthFail) == []
    assert len(host.down(SaUpdate)) == 2  # nothing installed for the refused attempt
    peer.ike.config = strict
    host.run_for(20, step=10)
    assert not host.of(SessionRekeyed)  # still backing off until t0 + 630
    host.run_for(10, step=10)
    assert [r.trigger for r in host.of(SessionRekeyed)] == ["lifetime"]
    assert_keys_crosswise(host, t, app)


def test_rekey_by_bytes_from_stats():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup(
        {T1: PSK1},
        [t],
        rekey=RekeyPolicy(lifetime=0, bytes=1 << 30, stats_interval=10.0),
        keepalive_interval=0,
    )
    host.start()
    host.run_for(30, step=5)
    assert len(host.down(GetStats)) >= 2 and not host.of(SessionRekeyed)
    t.tx_bytes = (1 << 30) - 1
    host.run_for(10, step=5)
    assert not host.of(SessionRekeyed)
    t.rx_bytes = 1 << 30
    host.run_for(10, step=5)
    assert [r.trigger for r in host.of(SessionRekeyed)] == ["bytes"]
    assert_keys_crosswise(host, t, app)
    # The counters keep growing from there: the new pair starts from that baseline.
    host.run_for(20, step=5)
    assert len(host.of(SessionRekeyed)) == 1
    t.rx_bytes += 1 << 30
    host.run_for(10, step=5)
    assert len(host.of(SessionRekeyed)) == 2


def test_rekey_started_by_the_target_and_its_early_delete():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t], keepalive_interval=0)
    host.start()
    s = app.session(T1)
    old = s.current
    peer = t.responder._peers[HOST_WWPN]  # the target's IKE SA: it starts a rekey itself
    host.hold_compl = True
    host.rx_exchange += 1
    rekey = wrap_ike(peer.ike.rekey_child(old.spi_out), s.tid)
    host.inject(ElsRcvd(t.ref, host.rx_exchange, rekey))
    assert len(t.installed) == 2  # the target installed its new pair on our answer
    new_theirs = next(i for i in t.installed if i != old.spi_out)
    # Its Delete of the old pair arrives while our new RX is still being installed.
    host.rx_exchange += 1
    delete = wrap_ike(peer.ike.delete_child(old.spi_out), s.tid)
    host.inject(ElsRcvd(t.ref, host.rx_exchange, delete))
    assert s.state is SessionState.SECURE and not host.down(AuthFail)
    host.release()
    assert [r.trigger for r in host.of(SessionRekeyed)] == ["peer"]
    assert s.current.spi_out == new_theirs and s.current.spi_in != old.spi_in
    assert set(host.sa[T1]) == {(SaDirection.RX, s.current.spi_in), (SaDirection.TX, s.current.spi_out)}
    assert_keys_crosswise(host, t, app)
    assert set(t.installed) == {new_theirs} and host.down(AuthFail) == []


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


# --- certificates -----------------------------------------------------------------------------------------


def _cert(subject_cn: str, key, issuer_name, issuer_key, *, ca: bool, wwpn: int | None = None):
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if wwpn is not None:
        uri = "urn:wwpn:" + wwpn.to_bytes(8, "big").hex()
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        b = b.add_extension(san, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, data: bytes, mode: int = 0o600) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return str(path)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(tmp_path, name: str, wwpns: list[int]):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = _cert(f"{name} CA", ca_key, ca_name, ca_key, ca=True)
    ca_path = _write(tmp_path / f"{name}-ca.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    creds = {}
    for w in wwpns:
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(f"port {w:016x}", k, ca_name, ca_key, ca=False, wwpn=w)
        cp = _write(tmp_path / f"{name}-{w:x}.pem", c.public_bytes(serialization.Encoding.PEM), 0o644)
        kp = _write(tmp_path / f"{name}-{w:x}.key", _pem_key(k))
        creds[w] = (cp, kp, ca_path)
    return creds


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return make_pki(d, "good", [HOST_WWPN, T1]), make_pki(d, "rogue", [T1])


def test_ecdsa_certificates_full_flow(pki):
    good, _ = pki
    host_creds = load_cert_credentials(good[HOST_WWPN][0], good[HOST_WWPN][1], [good[HOST_WWPN][2]])
    target_creds = load_cert_credentials(good[T1][0], good[T1][1], [good[T1][2]])
    t = FakeTarget(T1, 0x020200, creds=target_creds)
    app, host = setup({T1: host_creds}, [t])
    host.start()
    assert app.session(T1).state is SessionState.SECURE
    assert_keys_crosswise(host, t, app)
    assert "PRIVATE" not in repr(host_creds) and "PRIVATE" not in repr(app.config)


def test_certificate_from_another_ca_is_refused(pki):
    good, rogue = pki
    host_creds = load_cert_credentials(good[HOST_WWPN][0], good[HOST_WWPN][1], [good[HOST_WWPN][2]])
    # The target presents a certificate for the right WWPN, issued by a CA we do not trust.
    target_creds = load_cert_credentials(rogue[T1][0], rogue[T1][1], [good[T1][2]])
    t = FakeTarget(T1, 0x020200, creds=target_creds)
    app, host = setup({T1: host_creds}, [t])
    host.start()
    fails = host.down(AuthFail)
    assert [f.reason for f in fails] == [AuthFailReason.AUTH_FAILED]  # we refused the peer
    assert host.down(SaUpdate) == []
    assert app.session(T1).state is SessionState.FAILED


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
