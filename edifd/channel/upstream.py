"""The upstream delivery queue of one control LUN: what the host has to say, until the agent has it.

Every response and event gets the LUN's next upstream sequence number (reserved ahead in the state
file, so never reused while it lives) and stays queued until the agent acknowledges it in a sealed
(authenticated) WRITE of the current epoch: a READ can be issued by anyone who reaches the LUN, so
its cursor is only a hint. An entry is delivered once and again only when a later READ's hint shows
that the first delivery never arrived.
Handshake answers and NOT_STARTED responses have no sequence number: they wait in a short queue of
their own and go first. Not thread-safe on its own: ChannelCore holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from edifd.proto import Body, ChannelKey, EpochKeys, EventOverflow, Heartbeat, Message, encode
from edifd.proto.lba import ChannelGeometry

_UNSEQ_MAX = 8  # handshake answers and NOT_STARTED responses waiting for a READ


@dataclass
class Entry:
    """One upstream message waiting for its acknowledgement."""

    seq: int
    body: Body
    request_id: int = 0
    delivered_at: float | None = None  # None: (re)deliver at the next READ
    # (epoch, encoded) cache: redeliveries are byte-identical, and a sealed body is never sealed
    # twice under one (key, nonce) with other content
    wire: tuple[int, bytes] | None = None


class UpstreamQueue:
    """Sequence numbers, the acknowledged cursor, redelivery and the overflow report of one LUN.

    `reserved` is the persisted reservation; `on_reserve` persists it whenever it moves ahead.
    """

    def __init__(
        self,
        key: ChannelKey,
        *,
        port_index: int,
        geometry: ChannelGeometry,
        queue_limit: int,
        redeliver_after: float,
        counters: dict[str, int],
        issued: int,
        on_reserve: Callable[[], None],
    ) -> None:
        self._key = key
        self._port_index = port_index
        self._geometry = geometry
        self._limit = queue_limit
        self._redeliver_after = redeliver_after
        self._counters = counters
        self._on_reserve = on_reserve
        self._step = max(1, geometry.window // 8)  # upstream sequence reservation step
        self.issued = issued
        self.acked = issued  # every upstream seq <= this is consumed (the agent's authenticated ack)
        self._delivered_hi = issued
        self.reserved = issued
        self._queue: OrderedDict[int, Entry] = OrderedDict()
        self._unseq: deque[Message] = deque()
        self._lost_unreported = 0
        self._overflow: Entry | None = None

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        """No room for the response of another request."""
        return len(self._queue) >= self._limit

    def post_event(self, body: Body) -> int | None:
        """Queue an event; None if it was dropped (the loss goes into an EVENT_OVERFLOW)."""
        self._counters["events_posted"] += 1
        if len(self._queue) >= self._limit - 1:  # the last place is for the overflow report
            self._lost_unreported += 1
            self._counters["events_lost"] += 1
            self._report_overflow()
            return None
        return self.enqueue(body, 0).seq

    def _report_overflow(self) -> None:
        if not self._lost_unreported:
            return
        ov = self._overflow
        if ov is not None and ov.wire is None and ov.seq in self._queue:  # never sealed yet
            assert isinstance(ov.body, EventOverflow)
            ov.body = EventOverflow(min(0xFFFFFFFF, ov.body.lost + self._lost_unreported))
            ov.wire = None
        elif len(self._queue) < self._limit:
            self._overflow = self.enqueue(EventOverflow(min(0xFFFFFFFF, self._lost_unreported)), 0)
        else:
            return
        self._lost_unreported = 0

    def enqueue(self, body: Body, request_id: int) -> Entry:
        self.issued += 1
        self.reserve()
        e = Entry(self.issued, body, request_id)
        self._queue[e.seq] = e
        return e

    def reserve(self, force: bool = False) -> None:
        """Keep the persisted reservation ahead of every upstream number issued."""
        if force or self.issued >= self.reserved:
            self.reserved = self.issued + self._step
            self._on_reserve()

    def restart(self) -> None:
        """A new epoch starts at what the agent has acknowledged: everything after that is (re)sent
        under the new epoch, with its original sequence number."""
        for e in self._queue.values():
            e.delivered_at = None
        self._delivered_hi = self.acked

    def ack(self, cursor: int) -> bool:
        """Apply the acknowledgement of an authenticated WRITE of the current epoch: drop what it
        covers. True if it moved. An ack beyond every number issued is a peer bug: ignored."""
        if cursor <= self.acked:
            return False  # a retried or overtaken WRITE: nothing new
        if cursor > self.issued:
            self._counters["bad_acks"] += 1
            return False
        while self._queue and next(iter(self._queue)) <= cursor:
            self._queue.popitem(last=False)
        self.acked = cursor
        self._delivered_hi = max(self._delivered_hi, cursor)
        self._report_overflow()
        return True

    def hint(self, residue: int, now: float) -> int | None:
        """A READ's cursor: evidence, never an acknowledgement. Returns it if it is plausible (not
        below the acknowledged number, not beyond what was delivered in this epoch)."""
        c = self._geometry.unwrap(residue, self.acked)
        if c < self.acked or c > self._delivered_hi:
            # An older READ overtaken by newer ones, one from before an epoch change, or a guess:
            # no evidence of loss.
            self._counters["stale_cursors"] += 1
            return None
        # This READ was sent after its issuer had consumed up to c: what we delivered after c long
        # ago evidently never reached it (lost completion, aborted READ, agent restart). A false
        # hint costs a redelivery, which the agent drops as a duplicate.
        self.redeliver_before(c, now, now)
        return c

    def redeliver_before(self, cursor: int, since: float, now: float) -> None:
        """A READ parked since `since` with `cursor` shows that what was delivered after the cursor
        before it was parked, long enough ago, never arrived."""
        for e in self._queue.values():
            if (e.seq > cursor and e.delivered_at is not None and e.delivered_at <= since
                    and now - e.delivered_at >= self._redeliver_after):
                e.delivered_at = None
                self._counters["redelivered"] += 1

    def push_unsequenced(self, msg: Message) -> None:
        self._unseq.append(msg)
        while len(self._unseq) > _UNSEQ_MAX:
            self._unseq.popleft()

    def next_wire(self, length: int, keys: EpochKeys | None, now: float) -> bytes | None:
        """The bytes of the next message to deliver into a READ of `length`, or None. `keys`: those
        of the established epoch (None: only unsequenced messages go out)."""
        bs = self._geometry.block_size
        if self._unseq:
            self._counters["messages_out"] += 1
            return encode(self._unseq.popleft(), self._key, block_size=bs, pad_to=length)
        if keys is None:
            return None
        epoch = keys.epoch
        for e in self._queue.values():
            if e.delivered_at is None:
                e.delivered_at = now
                self._delivered_hi = max(self._delivered_hi, e.seq)
                if e.wire is None or e.wire[0] != epoch:
                    msg = Message(e.body, self._port_index, epoch, e.request_id, e.seq)
                    e.wire = (epoch, encode(msg, self._key, keys=keys, block_size=bs, pad_to=length))
                self._counters["messages_out"] += 1
                return e.wire[1]
        return None

    def heartbeat(self, length: int, epoch: int) -> bytes:
        """A MAC'd HEARTBEAT filling a READ of `length`; its sequence is the last number issued."""
        self._counters["heartbeats"] += 1
        msg = Message(Heartbeat(), self._port_index, epoch, 0, self.issued)
        return encode(msg, self._key, block_size=self._geometry.block_size, pad_to=length)
