"""SaDatabase under random sequences of SA_UPDATEs, frames and clock ticks: the invariants hold
after every step, refusals change nothing, and every SA that leaves is zeroized."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edifd.edif import SaDatabase, SaUpdateDone, SecurityAssociation
from edifd.proto import Cipher, SaDirection, SaStatus

SPIS = st.integers(min_value=1, max_value=5)
DIRS = st.sampled_from(list(SaDirection))
KEYS = st.sampled_from([b"\x11" * 16, b"\x22" * 16])


class SadbMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.db = SaDatabase()
        self.now = 0.0
        self.seen: set[SecurityAssociation] = set()
        self.tx_order: list[int] = []  # SPIs of TX SAs in install order (the model of tx_sa)

    def _state(self) -> object:
        return self.db.snapshot()

    def _track(self) -> None:
        for d in SaDirection:
            self.seen.update(self.db.sas(d))

    @rule(direction=DIRS, spi=SPIS, key=KEYS)
    def install(self, direction: SaDirection, spi: int, key: bytes) -> None:
        before = self._state()
        had = any(sa.spi == spi for sa in self.db.sas(direction))
        r = self.db.install(direction, spi, Cipher.AES_GCM_128, key, b"salt")
        if not r.ok:
            assert r.events == () and self._state() == before
        else:
            assert r.events == (SaUpdateDone(direction, spi, SaStatus.SUCCESS),)
            if direction is SaDirection.TX and not had:
                self.tx_order.append(spi)
        self._track()

    @rule(direction=DIRS, spi=SPIS, force=st.booleans())
    def delete(self, direction: SaDirection, spi: int, force: bool) -> None:
        before = self._state()
        r = self.db.delete(direction, spi, now=self.now, force=force)
        if not r.ok:
            assert r.events == () and self._state() == before
        elif direction is SaDirection.TX and spi in self.tx_order:
            self.tx_order.remove(spi)
        self._track()

    @rule(spi=SPIS)
    def frame(self, spi: int) -> None:
        if self.db.rx_sa(spi) is not None:
            self.db.on_frame_received(spi)

    @rule(dt=st.floats(min_value=0, max_value=30))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.db.tick(self.now)

    @invariant()
    def slots_and_pending(self) -> None:
        for d in SaDirection:
            spis = [sa.spi for sa in self.db.sas(d)]
            assert len(spis) <= 2 and len(set(spis)) == len(spis)
            assert all(sa.alive for sa in self.db.sas(d))
        p = self.db.pending_rx_delete
        assert p is None or self.db.rx_sa(p) is not None
        assert (self.db.next_deadline() is None) == (p is None)
        assert self.db.both_confirmed == bool(self.db.sas(SaDirection.RX) and self.db.sas(SaDirection.TX))

    @invariant()
    def tx_is_the_newest(self) -> None:
        tx = self.db.tx_sa
        assert (tx.spi if tx else None) == (self.tx_order[-1] if self.tx_order else None)

    @invariant()
    def gone_means_zeroized(self) -> None:
        live = {id(sa) for d in SaDirection for sa in self.db.sas(d)}
        for sa in self.seen:
            if id(sa) not in live:
                assert not sa.alive and not any(sa._key) and not any(sa._salt)


SadbMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSadbMachine = SadbMachine.TestCase
