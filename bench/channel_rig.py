"""What the in-process channel benches share (bench/soak.py, bench/abuse.py): a clock the bench moves by
hand, and a request handler that counts what the host acts on."""

from __future__ import annotations

from collections import Counter

from edifd.channel import BasicHandler, StaticState
from edifd.proto import Message


class Clock:
    """time.monotonic's stand-in: `now` moves only when the bench says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ActedHandler(BasicHandler):
    """BasicHandler that counts every request the host acts on by (epoch, sequence): none may repeat."""

    def __init__(self) -> None:
        super().__init__(StaticState(wwpn=0x2100_0024_FF00_0001))
        self.acted: Counter[tuple[int, int]] = Counter()

    @property
    def n(self) -> int:
        return sum(self.acted.values())

    def handle(self, msg: Message):  # type: ignore[override]
        self.acted[(msg.epoch, msg.sequence)] += 1
        return super().handle(msg)

    def keepalive(self, msg: Message) -> None:
        self.acted[(msg.epoch, msg.sequence)] += 1
