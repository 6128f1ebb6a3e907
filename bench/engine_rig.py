"""The whole-path rig of bench/edif_scale.py: the agent side of one control LUN wired to a port's
EdifEngine, and the bounded wait the engine benches poll with.

Imported by edif_scale.py as `engine_rig` (bench/ on sys.path, like bench/edif.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edif import BENCH_PSK

from edifd.channel import ChannelCore
from edifd.channel.loopback import Loopback
from edifd.proto import Body, ChannelKey
from edifd.runtime.engine import EdifEngine
from edifd.scsi import ScsiDisk
from edifd.secapp.app import SecurityApp
from edifd.secapp.config import PeerPolicy, PskCredentials, RekeyPolicy, SecConfig
from guest_agent.client import ChannelClient


class BenchFailure(RuntimeError):
    """A negotiation or an SA install failed, or the run went over its time budget."""


def wait_for(done: Callable[[], bool], end: float, failure: str, poll: float = 0.01) -> None:
    """Poll `done` until it holds; BenchFailure(failure) once time.monotonic() passes `end`."""
    while not done():
        if time.monotonic() > end:
            raise BenchFailure(failure)
        time.sleep(poll)


class Agent:
    """One control LUN as the e2e test wires it: SecurityApp -> ChannelClient -> loopback SCSI ->
    ChannelCore(handler = the port's EdifEngine). Pumped by the caller's thread."""

    def __init__(self, engine: EdifEngine, target_wwpn: int, key: ChannelKey,
                 rekey: RekeyPolicy | None = None) -> None:
        blocks = (16 << 20) // 512
        self.core = ChannelCore(key, num_blocks=blocks, handler=engine, state=engine, park_time=0.2)
        engine.attach(self.core.post_event)
        cfg = SecConfig(peers={target_wwpn: PeerPolicy(target_wwpn, PskCredentials(BENCH_PSK))},
                        keepalive_interval=1.0, keepalive_misses=20, reconnect_delay=0.2,
                        rekey=rekey or RekeyPolicy(lifetime=3600.0, bytes=0))
        self.app = SecurityApp(cfg, time.monotonic)
        self.client = ChannelClient(key, capacity_blocks=blocks, clock=time.monotonic, keepalive_ms=1000)
        self.lb = Loopback(ScsiDisk(self.core), self.client)
        self.client.start()
        self.lb.pump()
        if not self.client.established:
            raise BenchFailure("the control channel did not come up")

    def send(self, items: list[object]) -> None:
        for item in items:
            if isinstance(item, Body):
                self.app.sent(item, self.client.request(item))

    def pump(self) -> None:
        self.send(self.app.tick(time.monotonic()))
        for m in self.lb.pump(k=4, rounds=3):
            self.send(self.app.on_message(m))
        self.core.tick()
