"""SecurityApp wired to the real channel: ChannelClient <-> SCSI (Loopback) <-> ChannelCore <-> a fake HBA.

Proves the wiring the lead will do (request ids from `ChannelClient.request`, `sent()`, messages from
`read_done`), and that everything the app sends is accepted by the real host end: MACs, sequences, the
EVENT_ACK the channel checks itself, keepalives.
"""

from __future__ import annotations

from test_secapp import PSK1, T1, Clock, FakeHost, FakeTarget, assert_keys_crosswise, make_config, seeded_rng

from edifd.channel import ChannelCore, RequestHandler
from edifd.channel.loopback import Loopback
from edifd.proto import Body, ChannelKey, Message, SessionShutdown, ShutdownReason
from edifd.scsi import ScsiDisk
from edifd.secapp.app import SecurityApp, SessionRekeyed, SessionSecure, SessionState
from edifd.secapp.config import RekeyPolicy
from guest_agent.client import ChannelClient

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


def test_full_flow_through_the_real_channel():
    rig = Rig(keepalive_interval=5.0)
    rig.drive(rig.app.start())
    s = rig.app.session(T1)
    assert s.state is SessionState.SECURE
    assert [type(e) for e in rig.events] == [SessionSecure]
    assert_keys_crosswise(rig.hba, rig.target, rig.app)
    rejected = {k: v for k, v in rig.core.counters.items() if k.startswith("rejected_") and v}
    assert rejected == {} and rig.client.counters["rejected"] == 0 and rig.core.counters["not_started"] == 0
    # Every request was answered through the channel and matched by its request id.
    assert rig.app.counters["unexpected"] == 0 and rig.client.outstanding == 0
    # Keepalives flow and are answered by the channel itself; the app never declares the host lost.
    before = rig.core.counters["messages_in"]
    for _ in range(6):
        rig.tick(5.0)
    assert rig.core.counters["messages_in"] - before == 6  # one KEEPALIVE per interval
    assert s.state is SessionState.SECURE and rig.app.running


def test_shutdown_ack_and_rekey_through_the_real_channel():
    rig = Rig(keepalive_interval=5.0, rekey=RekeyPolicy(lifetime=60.0, bytes=0), reconnect_delay=1.0)
    rig.drive(rig.app.start())
    for _ in range(13):
        rig.tick(5.0)
    assert [e.trigger for e in rig.events if isinstance(e, SessionRekeyed)] == ["lifetime"]
    assert_keys_crosswise(rig.hba, rig.target, rig.app)
    # SESSION_SHUTDOWN: the app's EVENT_ACK is checked and accepted by the real channel end.
    rig.target.generation += 1
    rig.hba.sa[T1].clear()
    rig.core.post_event(SessionShutdown(rig.target.ref, ShutdownReason.LOGO))
    rig.drive([])
    assert rig.app.session(T1).state is SessionState.IDLE
    rig.tick(2.0)
    assert rig.app.session(T1).state is SessionState.SECURE
    assert len([e for e in rig.events if isinstance(e, SessionSecure)]) == 2
    assert_keys_crosswise(rig.hba, rig.target, rig.app)
    assert rig.app.counters["unexpected"] == 0 and rig.client.outstanding == 0
