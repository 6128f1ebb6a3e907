"""SecurityApp wired to the real channel: ChannelClient <-> SCSI (Loopback) <-> ChannelCore <-> a fake HBA.

Proves the wiring the lead will do (request ids from `ChannelClient.request`, `sent()`, messages from
`read_done`), and that everything the app sends is accepted by the real host end: MACs, sequences, the
EVENT_ACK the channel checks itself, keepalives.
"""

from __future__ import annotations

from edifd.proto import SessionShutdown, ShutdownReason
from edifd.secapp.app import SessionRekeyed, SessionSecure, SessionState
from edifd.secapp.config import RekeyPolicy
from tests.support.secapp import T1, Rig, assert_keys_crosswise


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
