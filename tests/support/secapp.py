"""The security application's test rig: an in-process edifd at the message level (no tests here).

`FakeHost` answers GET_PORT_INFO / GET_TARGETS / SECURE_CONNECT, raises AUTH_NEEDED, relays ELS_SEND
payloads to a real IKE responder (through the real responder orchestration, AuthResponder) and returns
the responder's IKE messages as ELS_RCVD, answers SA_UPDATE with SA_UPDATE_COMPL, and keeps an SA table
per target with the HBA's rule of at most 2 SAs per direction. Everything runs on the shared fake `Clock`.
`ChannelHba` is the same behaviour as the real channel core's request handler, and `Rig` wires
SecurityApp -> ChannelClient -> SCSI loopback -> ChannelCore -> ChannelHba.
"""

from __future__ import annotations

import random

from edifd.channel import ChannelCore, RequestHandler
from edifd.channel.loopback import Loopback
from edifd.proto import (
    AppStop,
    AuthFail,
    AuthNeeded,
    AuthOk,
    Body,
    ChannelKey,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    EpochKeys,
    EventAck,
    GetPortInfo,
    GetStats,
    GetTargets,
    Keepalive,
    LinkState,
    Message,
    PortInfo,
    PortOffline,
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
    TargetList,
    decode,
    encode,
)
from edifd.scsi import ScsiDisk
from edifd.secapp.app import SecurityApp
from edifd.secapp.config import IkePolicy, PeerPolicy, PskCredentials, RekeyPolicy, SecConfig
from edifd.secapp.responder import AuthResponder, ElsAnswer, ElsRequest, InstallSa, PeerAuthFailed, RemoveSa
from guest_agent.client import ChannelClient
from tests.support.clock import Clock

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
            keys = EpochKeys.derive(CHANNEL_KEY, msg.port_index, bytes(32), bytes(32), msg.epoch) \
                if msg.epoch else None
            msg = decode(encode(msg, CHANNEL_KEY, keys=keys), CHANNEL_KEY, keys=keys)
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


# --- the same host behind the real channel ----------------------------------------------------------

KEY = ChannelKey(bytes(range(1, 33)))
BLOCKS = (16 << 20) // 512


class ChannelHba(FakeHost, RequestHandler):
    """FakeHost's edifd behaviour as the channel's RequestHandler: responses are returned to the core,
    events are posted through it afterwards (as the HBA would, from its own thread)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.outbox: list[Body] = []
        self._answer: Body | None = None

    def handle(self, msg: Message) -> Body:
        self._answer = None
        FakeHost.handle(self, msg.body, msg.request_id)
        assert self._answer is not None
        self.log.append(("down", msg.body))
        return self._answer

    def respond(self, rid: int, body: Body) -> None:
        self._answer = body

    def event(self, body: Body) -> Message:
        self.outbox.append(body)
        return Message(body)


class Rig:
    def __init__(self, **cfg) -> None:
        self.clock = Clock()
        self.target = FakeTarget(T1, 0x020200, PSK1)
        self.app = SecurityApp(make_config({T1: PSK1}, **cfg), self.clock, rng=seeded_rng(3))
        self.hba = ChannelHba(self.app, self.clock, [self.target])
        self.core = ChannelCore(KEY, num_blocks=BLOCKS, clock=self.clock, handler=self.hba)
        ms = int(self.app.config.keepalive_interval * 1000)
        self.client = ChannelClient(KEY, capacity_blocks=BLOCKS, clock=self.clock, keepalive_ms=ms)
        self.lb = Loopback(ScsiDisk(self.core), self.client)
        self.client.start()
        self.lb.pump()
        assert self.client.established and self.core.established
        self.events: list = []
        self.messages: list[Message] = []

    def drive(self, items: list, rounds: int = 100) -> None:
        pending = list(items)
        for _ in range(rounds):
            for item in pending:
                if isinstance(item, Body):
                    self.app.sent(item, self.client.request(item))
                else:
                    self.events.append(item)
            pending = []
            for body in self.hba.outbox:
                self.core.post_event(body)
            self.hba.outbox = []
            msgs = self.lb.pump()
            self.messages += msgs
            for m in msgs:
                pending += self.app.on_message(m)
            if not pending and not msgs and not self.hba.outbox:
                return
        raise AssertionError("the exchange did not settle")

    def tick(self, dt: float) -> None:
        self.clock.now += dt
        self.core.tick()
        self.drive(self.app.tick(self.clock.now))
