"""Bookkeeping of ``edif-agent ping`` (sans-IO): what was sent, what came back, RTT figures.

Times are passed in by the caller (monotonic seconds), so this module never reads a clock.

Counted from request ids (downstream) and upstream header sequence numbers:

* ``sent``: requests issued; ``received``: distinct requests answered; ``lost`` = sent - received;
* ``duplicates``: answers for a request already answered (must stay 0: exactly-once delivery);
* ``in_order``/``out_of_order``: an answer is in order when it answers a later request than every
  answer before it;
* ``unexpected``: answers naming a request id this run never sent;
* ``seq_gaps``/``seq_repeats``: upstream sequence numbers, per epoch, that skip ahead or do not advance
  (the channel promises +1 per message; heartbeats are not counted here).

RTT percentiles use the nearest-rank method (p99 of 1000 samples is the 990th smallest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: list[float], p: float) -> float | None:
    """Nearest-rank percentile (0 < p <= 100) of samples; None when there are none."""
    if not samples:
        return None
    if not 0 < p <= 100:
        raise ValueError("percentile must be in (0, 100]")
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


@dataclass
class PingTally:
    sent: int = 0
    duplicates: int = 0
    in_order: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    rtts: list[float] = field(default_factory=list, repr=False)
    _order: dict[int, int] = field(default_factory=dict, repr=False)  # request id -> send index
    _sent_at: dict[int, float] = field(default_factory=dict, repr=False)
    _answered: set[int] = field(default_factory=set, repr=False)
    _last_index: int = -1
    _last_seq: dict[int, int] = field(default_factory=dict, repr=False)  # epoch -> last sequence

    def on_sent(self, request_id: int, now: float) -> None:
        if request_id in self._order:
            raise ValueError(f"request id {request_id} sent twice")
        self._order[request_id] = self.sent
        self._sent_at[request_id] = now
        self.sent += 1

    def on_upstream(self, epoch: int, sequence: int) -> None:
        """Every upstream message that carries a sequence (responses and events)."""
        last = self._last_seq.get(epoch)
        if last is not None:
            if sequence <= last:
                self.seq_repeats += 1
                return
            if sequence != last + 1:
                self.seq_gaps += 1
        self._last_seq[epoch] = sequence

    def on_response(self, request_id: int, now: float) -> bool:
        """An answer arrived; True when it is the first answer to a request we sent."""
        idx = self._order.get(request_id)
        if idx is None:
            self.unexpected += 1
            return False
        if request_id in self._answered:
            self.duplicates += 1
            return False
        self._answered.add(request_id)
        if idx > self._last_index:
            self.in_order += 1
            self._last_index = idx
        else:
            self.out_of_order += 1
        sent_at = self._sent_at.pop(request_id, None)
        if sent_at is not None:  # None after a restart: the send time died with the old process
            self.rtts.append(now - sent_at)
        return True

    def answered(self, request_id: int) -> bool:
        return request_id in self._answered

    @property
    def received(self) -> int:
        return len(self._answered)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def report(self) -> dict[str, Any]:
        ms = [r * 1000 for r in self.rtts]
        return {
            "sent": self.sent,
            "received": self.received,
            "in_order": self.in_order,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "seq_gaps": self.seq_gaps,
            "seq_repeats": self.seq_repeats,
            "rtt_ms": {
                "n": len(ms),
                "p50": _round(percentile(ms, 50)),
                "p99": _round(percentile(ms, 99)),
                "max": _round(max(ms) if ms else None),
            },
        }

    # Persistence across an agent restart (JSON-friendly; RTT samples are kept, send times are not).
    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "duplicates": self.duplicates, "in_order": self.in_order,
            "out_of_order": self.out_of_order, "unexpected": self.unexpected, "seq_gaps": self.seq_gaps,
            "seq_repeats": self.seq_repeats, "rtts": self.rtts, "order": list(self._order.items()),
            "answered": sorted(self._answered), "last_index": self._last_index,
            "last_seq": list(self._last_seq.items()),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PingTally:
        try:
            t = cls(sent=int(d["sent"]), duplicates=int(d["duplicates"]), in_order=int(d["in_order"]),
                    out_of_order=int(d["out_of_order"]), unexpected=int(d["unexpected"]),
                    seq_gaps=int(d["seq_gaps"]), seq_repeats=int(d["seq_repeats"]),
                    rtts=[float(x) for x in d["rtts"]])
            t._order = {int(k): int(v) for k, v in d["order"]}
            t._answered = {int(x) for x in d["answered"]}
            t._last_index = int(d["last_index"])
            t._last_seq = {int(k): int(v) for k, v in d["last_seq"]}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved ping tally: {e}") from None
        return t


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
