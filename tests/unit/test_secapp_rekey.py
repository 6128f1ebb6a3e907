"""SecurityApp rekeying against the fake host: by lifetime and by bytes (make-before-break, never more
than two SAs per direction), a refused rekey, the host's deferred removal of the old RX SA, and a rekey
the target starts.
"""

from __future__ import annotations

import dataclasses

from edifd.ike.codes import DhGroup
from edifd.proto import AuthFail, AuthFailReason, ElsRcvd, GetStats, SaDirection, SaFlags, SaUpdate
from edifd.secapp.app import AppNotice, SessionFailed, SessionRekeyed, SessionState
from edifd.secapp.config import RekeyPolicy
from edifd.secapp.relay import wrap_ike
from tests.support.secapp import HOST_WWPN, PSK1, T1, FakeHost, FakeTarget, assert_keys_crosswise, setup

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
