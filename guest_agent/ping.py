"""Bookkeeping of ``edif-agent ping`` (sans-IO): what was sent, what came back, RTT figures.

Times are passed in by the caller (monotonic seconds), so this module never reads a clock.

A *ping* is one logical round trip; it is normally one KEEPALIVE request, but may be re-sent under a
new request id when the channel says its answer can no longer come (the host restarted and its epoch
went with it), or when an agent restart left it unsent. Counted per ping:

* ``sent``: pings issued; ``received``: pings answered; ``lost`` = sent - received;
* ``resent``: extra requests issued for pings already sent (never counted as sent again);
* ``duplicates``: answers for a ping already answered, under any of its request ids (must stay 0: an
  answer to the first request after its re-send would mean a message was acted on twice);
* ``in_order``/``out_of_order``: an answer is in order when it answers a later ping than every
  answer before it;
* ``unexpected``: answers naming a request id this run never used;
* ``seq_gaps``/``seq_repeats``: upstream header sequence numbers, per epoch, that skip ahead or do not
  advance (the channel delivers +1 per message; heartbeats and local failures carry none).

RTT percentiles use the nearest-rank method (p99 of 1000 samples is the 990th smallest). A ping
answered after a re-send is timed from its first request.
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
    resent: int = 0
    duplicates: int = 0
    in_order: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    rtts: list[float] = field(default_factory=list, repr=False)
    _index: dict[int, int] = field(default_factory=dict, repr=False)  # request id -> ping index
    _latest: dict[int, int] = field(default_factory=dict, repr=False)  # unanswered ping -> newest rid
    _sent_at: dict[int, float] = field(default_factory=dict, repr=False)  # ping -> first send (this run)
    _answered: set[int] = field(default_factory=set, repr=False)  # ping indexes
    _last_index: int = -1
    _last_seq: dict[int, int] = field(default_factory=dict, repr=False)  # epoch -> last sequence

    def on_sent(self, request_id: int, now: float) -> int:
        """A new ping went out as request_id; returns its index."""
        self._new_rid(request_id)
        idx = self.sent
        self.sent += 1
        self._index[request_id] = idx
        self._latest[idx] = request_id
        self._sent_at[idx] = now
        return idx

    def on_resent(self, old_request_id: int, request_id: int) -> None:
        """The ping of old_request_id went out again as request_id."""
        idx = self._index.get(old_request_id)
        if idx is None or idx in self._answered:
            raise ValueError(f"request id {old_request_id} is not a pending ping")
        self._new_rid(request_id)
        self._index[request_id] = idx
        self._latest[idx] = request_id
        self.resent += 1

    def _new_rid(self, request_id: int) -> None:
        if request_id in self._index:
            raise ValueError(f"request id {request_id} used twice")

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
        """An answer arrived; True when it is the first answer to its ping."""
        idx = self._index.get(request_id)
        if idx is None:
            self.unexpected += 1
            return False
        if idx in self._answered:
            self.duplicates += 1
            return False
        self._answered.add(idx)
        self._latest.pop(idx, None)
        if idx > self._last_index:
            self.in_order += 1
            self._last_index = idx
        else:
            self.out_of_order += 1
        sent_at = self._sent_at.pop(idx, None)
        if sent_at is not None:  # None after a restart: the send time died with the old process
            self.rtts.append(now - sent_at)
        return True

    def answered(self, request_id: int) -> bool:
        idx = self._index.get(request_id)
        return idx is not None and idx in self._answered

    def pending(self) -> list[int]:
        """The newest request id of every unanswered ping, oldest ping first."""
        return [rid for _, rid in sorted(self._latest.items())]

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
            "resent": self.resent,
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
            "sent": self.sent, "resent": self.resent, "duplicates": self.duplicates,
            "in_order": self.in_order, "out_of_order": self.out_of_order, "unexpected": self.unexpected,
            "seq_gaps": self.seq_gaps, "seq_repeats": self.seq_repeats, "rtts": self.rtts,
            "index": list(self._index.items()), "latest": list(self._latest.items()),
            "answered": sorted(self._answered), "last_index": self._last_index,
            "last_seq": list(self._last_seq.items()),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PingTally:
        try:
            t = cls(sent=int(d["sent"]), resent=int(d["resent"]), duplicates=int(d["duplicates"]),
                    in_order=int(d["in_order"]), out_of_order=int(d["out_of_order"]),
                    unexpected=int(d["unexpected"]), seq_gaps=int(d["seq_gaps"]),
                    seq_repeats=int(d["seq_repeats"]), rtts=[float(x) for x in d["rtts"]])
            t._index = {int(k): int(v) for k, v in d["index"]}
            t._latest = {int(k): int(v) for k, v in d["latest"]}
            t._answered = {int(x) for x in d["answered"]}
            t._last_index = int(d["last_index"])
            t._last_seq = {int(k): int(v) for k, v in d["last_seq"]}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved ping tally: {e}") from None
        return t


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
