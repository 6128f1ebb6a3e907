"""ChannelCore: the host end of the control channel, as the `Medium` of the control LUN's ScsiDisk.

WRITE -> decode -> authorize -> (once) dispatch; READ -> acknowledge its cursor -> deliver or park.
The delivery rules are specified in docs/protocol.md section 8; in short:

* downstream: the WRITE slot and the MAC'd header carry the sequence; expected -> act once;
  lower -> a retry (same MAC) is GOOD and not acted on again, anything else is a replay; higher ->
  a gap, refused so the agent resends in order;
* upstream: every response and event gets the next sequence number of this LUN (never reused
  while the state file lives, across epochs); it stays queued until a READ's cursor acknowledges
  it, and is delivered again if a later READ shows its first delivery never arrived;
* parked READs complete with a MAC'd heartbeat after park_time; several queued messages complete
  several parked READs at once; every READ buffer is filled completely.

Sans-IO: no sockets, files or clocks of its own (the clock and the state-persisting callable are
injected). Thread-safe: the ring owner calls read/write, a ticker calls tick(), the HBA side calls
post_event() and resolves Deferreds from its own threads. Pendings are resolved outside the lock.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock

from edifd.proto import (
    HEADER_SIZE,
    AppStart,
    AppStartAnswer,
    AppStartChallenge,
    AppStartPhase,
    AppStop,
    Body,
    ChannelKey,
    Direction,
    EventAck,
    EventOverflow,
    Heartbeat,
    HostReset,
    Keepalive,
    Kind,
    Message,
    ProtocolError,
    Response,
    Resync,
    Status,
    check_response,
    decode,
    encode,
    host_proof,
    new_epoch,
    new_nonce,
    verify_agent_proof,
)
from edifd.proto.lba import LANES, NO_CURSOR_LANE, ChannelGeometry, GeometryError, OutsideWindowError
from edifd.proto.reject import Reject
from edifd.scsi import (
    CheckCondition,
    IoKind,
    IoRequest,
    MediumError,
    Pending,
    ScsiCommand,
    ScsiResponse,
    SenseKey,
)
from edifd.scsi import Status as ScsiStatus
from edifd.scsi.sense import Asc

from .burst_log import BurstLog
from .handler import BasicHandler, Deferred, RequestHandler, StateProvider, StaticState, state_events
from .hoststate import HostState

log = logging.getLogger("edifd.channel")

_MAC = slice(40, HEADER_SIZE)  # the header MAC identifies a message's exact content
_RECENT = 16  # accepted WRITE MACs remembered per epoch, to tell a retry from a replay
_UNSEQ_MAX = 8  # handshake answers and NOT_STARTED responses waiting for a READ


@dataclass
class _Entry:
    """One upstream message waiting for its acknowledgement."""

    seq: int
    body: Body
    request_id: int = 0
    delivered_at: float | None = None  # None: (re)deliver at the next READ
    wire: tuple[int, bytes] | None = None  # (epoch, encoded) cache: redeliveries are byte-identical


@dataclass
class _Parked:
    pending: Pending
    since: float
    length: int
    cursor: int | None  # the acknowledged cursor this READ carried (None: stale or none)


@dataclass
class _EpochMemory:
    """What identifies the WRITEs of an epoch: next sequence and the MACs of recent ones."""

    epoch: int
    down_next: int = 1
    recent: OrderedDict[int, bytes] | None = None

    def remember(self, seq: int, mac: bytes) -> None:
        if self.recent is None:
            self.recent = OrderedDict()
        self.recent[seq] = mac
        while len(self.recent) > _RECENT:
            self.recent.popitem(last=False)

    def is_retry(self, seq: int, mac: bytes) -> bool:
        return self.recent is not None and self.recent.get(seq) == mac

    @property
    def last_mac(self) -> bytes:
        if not self.recent:
            return bytes(32)
        return next(reversed(self.recent.values()))


COUNTERS = (
    "messages_in", "messages_out", "redelivered", "heartbeats", "reads_parked", "retries",
    "events_posted", "events_lost", "resyncs", "handshakes", "epochs", "not_started",
    "stale_cursors", "scan_reads", "bad_reads", "agent_silent",
) + tuple(f"rejected_{r.counter}" for r in Reject)


class ChannelCore:
    """The channel of one control LUN (one HBA port). See the module docstring."""

    write_cache = False

    def __init__(
        self,
        key: ChannelKey,
        *,
        num_blocks: int,
        block_size: int = 512,
        port_index: int = 0,
        handler: RequestHandler | None = None,
        state: StateProvider | None = None,
        park_time: float = 5.0,
        queue_limit: int = 64,
        redeliver_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        restored: HostState | None = None,
        persist: Callable[[HostState], None] | None = None,
        name: str = "control",
    ) -> None:
        if not park_time > 0:
            raise ValueError("park_time must be positive")
        if not redeliver_after > 0:
            raise ValueError("redeliver_after must be positive")
        self.geometry = ChannelGeometry(block_size, num_blocks)
        if queue_limit < 2 or self.geometry.window < 4 * (queue_limit + LANES):
            raise ValueError(
                f"queue_limit {queue_limit}: needs 2 <= queue_limit <= {self.geometry.window // 4 - LANES} "
                f"for this LUN size (a larger control LUN allows more)")
        if not 0 <= port_index <= 0xFFFF:
            raise ValueError("port_index must be an unsigned 16-bit integer")
        self._key = key
        self.port_index = port_index
        self.state = state if state is not None else StaticState(wwpn=0)
        self.handler: RequestHandler = handler if handler is not None else BasicHandler(self.state)
        self.park_time = park_time
        self.queue_limit = queue_limit
        self.redeliver_after = redeliver_after
        self.name = name
        self._clock = clock
        self._persist = persist
        self._lock = Lock()
        self._burst = BurstLog(log, clock)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

        self._current: _EpochMemory | None = None  # the established epoch
        self._previous: _EpochMemory | None = None  # the one before (or the one before a restart)
        self._challenge: tuple[bytes, bytes] | None = None  # (Na, Nh) awaiting a PROOF
        self._last_proof: tuple[bytes, bytes] | None = None  # the PROOF that made _current
        self._step = max(1, self.geometry.window // 8)  # upstream sequence reservation step
        self._issued = restored.up_reserved if restored is not None else 0
        self._acked = self._issued  # every upstream seq <= this is consumed
        self._delivered_hi = self._issued
        self._reserved = self._issued
        self._queue: OrderedDict[int, _Entry] = OrderedDict()
        self._unseq: deque[Message] = deque()
        self._parked: OrderedDict[int, _Parked] = OrderedDict()
        self._lost_unreported = 0
        self._overflow: _Entry | None = None
        self._closing = False
        self._keepalive = 0.0  # seconds the agent promised between messages (APP_START keepalive_ms)
        self._last_heard = 0.0
        self._silent = False  # agent_silent already reported for this silence
        if restored is not None and restored.epoch:
            mem = _EpochMemory(restored.epoch, restored.down_next)
            mem.remember(restored.down_next - 1, restored.last_digest)
            self._previous = mem
            # The HBA and every SA went with the old process: say so first in the next epoch.
            self._enqueue(HostReset(), 0)
            self.counters["events_posted"] += 1
        self._reserve(force=True)

    # --- Medium ---------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self.geometry.block_size

    @property
    def num_blocks(self) -> int:
        return self.geometry.num_blocks

    def read(self, req: IoRequest) -> bytes | Pending:
        g = self.geometry
        size = req.nblocks * g.block_size
        if not g.in_read_window(req.lba) or req.kind is not IoKind.READ:
            # Partition scans and blkid read the guards, VERIFY compares: zeros, at once, no cursor.
            with self._lock:
                self.counters["scan_reads"] += 1
            return bytes(size)
        try:
            residue, lane = g.parse_read(req.lba, req.nblocks)
        except GeometryError:
            with self._lock:
                self.counters["bad_reads"] += 1
            raise CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB) from None
        length = size  # one whole slot (4096 bytes): every byte of it is written
        with self._lock:
            now = self._clock()
            cursor = None if lane == NO_CURSOR_LANE else self._ack(residue, now)
            wire = self._next_wire(length, now)
            if wire is not None:
                return wire
            if self._closing:  # nothing parks any more: LUN removal and shutdown never wait on us
                return self._heartbeat(length)
            pending = Pending(req.command)
            self._parked[id(pending)] = _Parked(pending, now, length, cursor)
            self.counters["reads_parked"] += 1
            return pending

    def write(self, req: IoRequest, data: bytes) -> None:
        where = f"{self.name} LBA {req.lba}"
        try:
            residue = self.geometry.parse_write(req.lba, req.nblocks)
        except OutsideWindowError as e:
            raise self._reject(where, Reject.OUTSIDE_WINDOW, str(e)) from None
        except GeometryError as e:
            raise self._reject(where, Reject.BAD_LENGTH, str(e)) from None
        try:
            msg = decode(data, self._key)
        except ProtocolError as e:
            raise self._reject(where, Reject.of_protocol_error(e), f"{e.reason}: {e}") from None
        if msg.direction is not Direction.DOWNSTREAM:
            raise self._reject(where, Reject.MALFORMED, f"{msg.type.name} is not a downstream message")
        if msg.port_index != self.port_index:
            raise self._reject(where, Reject.WRONG_PORT,
                               f"port index {msg.port_index}, LUN is {self.port_index}")
        if residue != msg.sequence % self.geometry.window:
            raise self._reject(where, Reject.SLOT_MISMATCH, "WRITE slot does not match the header sequence")
        mac = bytes(data[_MAC])
        resolutions: list[tuple[Pending, ScsiResponse]] = []
        with self._lock:
            if isinstance(msg.body, AppStart):
                if self._app_start(where, msg, mac):
                    # READs parked now may be orphans of an agent that restarted: its handshake
                    # answer must not vanish into one. They get a heartbeat; live agents re-arm.
                    resolutions = self._heartbeat_all()
                act = False
            elif msg.epoch == 0:
                if msg.sequence != 0:
                    raise self._reject_locked(where, Reject.MALFORMED, "sequence without an epoch")
                self._push_unseq(Message(Response(msg.type, Status.NOT_STARTED), self.port_index, 0,
                                         msg.request_id, 0))
                self.counters["not_started"] += 1
                resolutions = self._fill_parked()
                act = False
            else:
                act = self._admit(where, msg, mac)
        self._resolve(resolutions)
        if act:
            self._dispatch(msg)

    def flush(self, req: IoRequest) -> None:
        return None

    def abort(self, cmd: ScsiCommand) -> None:
        """The transport ended a parked READ (TMR, ring reset): forget it."""
        with self._lock:
            for k, p in self._parked.items():
                if p.pending.command is cmd:
                    del self._parked[k]
                    return

    # --- the HBA side ---------------------------------------------------------------------------

    def post_event(self, body: Body) -> int | None:
        """Queue an upstream event (any thread). Returns its sequence number, or None if the queue
        was full and it was dropped (an EVENT_OVERFLOW reports the loss)."""
        if body.TYPE.kind is not Kind.EVENT:
            raise ValueError(f"{body.TYPE.name} is not an event")
        with self._lock:
            seq = self._post_event_locked(body)
            resolutions = self._fill_parked()
        self._resolve(resolutions)
        return seq

    def tick(self) -> int:
        """Heartbeat parked READs due, and redeliver what a parked READ shows was lost. Returns how
        many READs completed."""
        with self._lock:
            now = self._clock()
            self._redeliver_for_parked(now)
            resolutions = self._fill_parked()
            for k in [k for k, p in self._parked.items() if now - p.since >= self.park_time]:
                p = self._parked.pop(k)
                resolutions.append((p.pending, self._good(self._heartbeat(p.length))))
            silent = (self._current is not None and self._keepalive > 0 and not self._silent
                      and now - self._last_heard > 3 * self._keepalive)
            if silent:
                self._silent = True
                self.counters["agent_silent"] += 1
        self._resolve(resolutions)
        if silent:
            # Three promised KEEPALIVEs missed: the EDIF VM is gone or hung (qla: log out its
            # secure sessions). The HBA decides; the epoch stays valid for a late agent.
            log.warning("%s: agent silent for %.1f s (keepalive %.1f s)", self.name, 3 * self._keepalive,
                        self._keepalive)
            self.handler.agent_silent()
        return len(resolutions)

    def release_all(self) -> int:
        """Complete every parked READ with the heartbeat now."""
        with self._lock:
            resolutions = self._heartbeat_all()
        self._resolve(resolutions)
        return len(resolutions)

    def _heartbeat_all(self) -> list[tuple[Pending, ScsiResponse]]:
        out = [(p.pending, self._good(self._heartbeat(p.length))) for p in self._parked.values()]
        self._parked.clear()
        return out

    def close(self) -> int:
        """Stop parking: complete what is parked and answer later READs at once."""
        with self._lock:
            self._closing = True
        return self.release_all()

    @property
    def established(self) -> bool:
        return self._current is not None

    @property
    def parked(self) -> tuple[float, ...]:
        """When each parked READ arrived (len(): how many; edifctl status shows it)."""
        with self._lock:
            return tuple(p.since for p in self._parked.values())

    def status(self) -> dict[str, object]:
        """For edifctl and logs: counters and queue figures, never key material."""
        with self._lock:
            return {
                "established": self._current is not None,
                "parked": len(self._parked),
                "queued": len(self._queue),
                "upstream_issued": self._issued,
                "upstream_acked": self._acked,
                "downstream_next": self._current.down_next if self._current else 0,
                "counters": dict(self.counters),
            }

    # --- downstream ------------------------------------------------------------------------------

    def _reject(self, where: str, reason: Reject, detail: str) -> CheckCondition:
        with self._lock:
            return self._reject_locked(where, reason, detail)

    def _reject_locked(self, where: str, reason: Reject, detail: str) -> CheckCondition:
        self.counters[f"rejected_{reason.counter}"] += 1
        self._burst.rejected(where, reason, detail)
        key, asc, ascq = reason.sense
        return MediumError(SenseKey(key), asc, ascq)

    def _admit(self, where: str, msg: Message, mac: bytes) -> bool:
        """Sequence rules for a MAC-verified request with an epoch. True: act on it now."""
        cur, prev, s = self._current, self._previous, msg.sequence
        if cur is not None and msg.epoch == cur.epoch:
            if s == cur.down_next:
                if len(self._queue) >= self.queue_limit:
                    raise self._reject_locked(where, Reject.QUEUE_FULL, f"{len(self._queue)} messages queued")
                cur.down_next += 1
                cur.remember(s, mac)
                self._last_heard, self._silent = self._clock(), False
                self._save()
                self.counters["messages_in"] += 1
                return True
            if 0 < s < cur.down_next:
                if cur.is_retry(s, mac):
                    self.counters["retries"] += 1
                    return False
                raise self._reject_locked(where, Reject.REPLAY, f"sequence {s} already used")
            if s == 0:
                raise self._reject_locked(where, Reject.MALFORMED, "sequence 0 inside an epoch")
            raise self._reject_locked(where, Reject.GAP, f"sequence {s}, expected {cur.down_next}")
        if prev is not None and msg.epoch == prev.epoch and 0 < s < prev.down_next:
            if prev.is_retry(s, mac):  # acted on before the epoch ended: still only once
                self.counters["retries"] += 1
                return False
            raise self._reject_locked(where, Reject.REPLAY, f"sequence {s} of the previous epoch")
        raise self._reject_locked(where, Reject.STALE_EPOCH, "not the current epoch (run APP_START)")

    def _app_start(self, where: str, msg: Message, mac: bytes) -> bool:
        """Handshake step; True if it queued an answer (False: a recognised retry)."""
        body = msg.body
        assert isinstance(body, AppStart)
        if msg.epoch != 0 or msg.sequence != 0:
            raise self._reject_locked(where, Reject.MALFORMED, "APP_START carries epoch 0 and sequence 0")
        if body.phase is AppStartPhase.HELLO:
            if self._challenge is not None and self._challenge[0] == body.agent_nonce:
                self.counters["retries"] += 1  # the same HELLO again: keep the challenge we sent
                return False
            # A HELLO changes no session state: it only replaces the pending challenge.
            self._challenge = (body.agent_nonce, new_nonce())
            challenge = AppStartChallenge(*self._challenge)
            self._push_unseq(Message(challenge, self.port_index, 0, msg.request_id, 0))
            self.counters["handshakes"] += 1
            return True
        pair = (body.agent_nonce, body.host_nonce)
        if pair == self._last_proof:
            self.counters["retries"] += 1
            return False
        if self._challenge != pair:
            raise self._reject_locked(where, Reject.REPLAY, "PROOF for no pending challenge")
        if not verify_agent_proof(self._key, self.port_index, body.agent_nonce, body.host_nonce, body.proof):
            raise self._reject_locked(where, Reject.BAD_PROOF, "agent proof does not verify")
        epoch = new_epoch()
        self._previous, self._current = self._current or self._previous, _EpochMemory(epoch)
        self._challenge, self._last_proof = None, pair
        self._keepalive, self._last_heard, self._silent = body.keepalive_ms / 1000, self._clock(), False
        # The new epoch starts at what the agent has acknowledged: everything after that is (re)sent
        # under the new epoch, with its original sequence number.
        for e in self._queue.values():
            e.delivered_at = None
        self._delivered_hi = self._acked
        proof = host_proof(self._key, self.port_index, body.agent_nonce, body.host_nonce, epoch)
        answer = AppStartAnswer(epoch, proof, heartbeat_ms=int(self.park_time * 1000))
        # Header sequence of the ANSWER = the last upstream number the agent needs no more.
        self._push_unseq(Message(answer, self.port_index, 0, msg.request_id, self._acked))
        self.counters["epochs"] += 1
        self._save()
        log.info("%s: channel established (port %d), upstream from %d", self.name, self.port_index,
                 self._acked)
        return True

    def _dispatch(self, msg: Message) -> None:
        body = msg.body
        try:
            if isinstance(body, Keepalive | EventAck | AppStop):
                if isinstance(body, EventAck):
                    self.handler.event_acked(msg)
                elif isinstance(body, AppStop):
                    self.handler.app_stopped(msg)
                else:
                    self.handler.keepalive(msg)
                result: Body | Deferred = Response(msg.type, Status.OK)
            elif isinstance(body, Resync):
                with self._lock:
                    self.counters["resyncs"] += 1
                    for ev in state_events(self.state):
                        self._post_event_locked(ev)
                result = Response(msg.type, Status.OK)
            else:
                result = self.handler.handle(msg)
        except Exception:
            log.exception("%s: handler failed on %s", self.name, msg.type.name)
            result = Response(msg.type, Status.FAILED)
        if isinstance(result, Deferred):
            result.bind(lambda b: self._respond(msg, b))
        else:
            self._respond(msg, result)

    def _respond(self, request: Message, body: Body) -> None:
        try:
            check_response(request, Message(body, request.port_index, 0, request.request_id, 0))
        except (ProtocolError, TypeError):
            log.error("%s: handler answered %s with %s; sending FAILED", self.name, request.type.name,
                      type(body).__name__)
            body = Response(request.type, Status.FAILED)
        with self._lock:
            self._enqueue(body, request.request_id)
            resolutions = self._fill_parked()
        self._resolve(resolutions)

    # --- upstream --------------------------------------------------------------------------------

    def _post_event_locked(self, body: Body) -> int | None:
        self.counters["events_posted"] += 1
        if len(self._queue) >= self.queue_limit - 1:  # the last place is for the overflow report
            self._lost_unreported += 1
            self.counters["events_lost"] += 1
            self._report_overflow()
            return None
        return self._enqueue(body, 0).seq

    def _report_overflow(self) -> None:
        if not self._lost_unreported:
            return
        ov = self._overflow
        if ov is not None and ov.delivered_at is None and ov.seq in self._queue:
            assert isinstance(ov.body, EventOverflow)
            ov.body = EventOverflow(min(0xFFFFFFFF, ov.body.lost + self._lost_unreported))
            ov.wire = None
        elif len(self._queue) < self.queue_limit:
            self._overflow = self._enqueue(EventOverflow(min(0xFFFFFFFF, self._lost_unreported)), 0)
        else:
            return
        self._lost_unreported = 0

    def _enqueue(self, body: Body, request_id: int) -> _Entry:
        self._issued += 1
        self._reserve()
        e = _Entry(self._issued, body, request_id)
        self._queue[e.seq] = e
        return e

    def _reserve(self, force: bool = False) -> None:
        """Keep the persisted reservation ahead of every upstream number issued."""
        if force or self._issued >= self._reserved:
            self._reserved = self._issued + self._step
            self._save()

    def _save(self) -> None:
        if self._persist is None:
            return
        mem = self._current or self._previous
        state = HostState(self.port_index, mem.epoch if mem else 0, mem.down_next if mem else 1,
                          self._reserved, mem.last_mac if mem else bytes(32))
        self._persist(state)

    def _ack(self, residue: int, now: float) -> int | None:
        """Apply a READ's cursor. Returns it if it is current (not older than what we know)."""
        c = self.geometry.unwrap(residue, self._acked)
        if c < self._acked or c > self._delivered_hi:
            # An older READ overtaken by newer ones, or one from before an epoch change: it
            # acknowledges nothing and is no evidence of loss.
            self.counters["stale_cursors"] += 1
            return None
        if c > self._acked:
            while self._queue and next(iter(self._queue)) <= c:
                self._queue.popitem(last=False)
            self._acked = c
            self._report_overflow()
        # This READ was sent after the agent had consumed up to c: what we delivered after c long
        # ago evidently never reached it (lost completion, aborted READ, agent restart).
        for e in self._queue.values():
            if e.delivered_at is not None and now - e.delivered_at >= self.redeliver_after:
                e.delivered_at = None
                self.counters["redelivered"] += 1
        return c

    def _redeliver_for_parked(self, now: float) -> None:
        for p in self._parked.values():
            if p.cursor is None:
                continue
            for e in self._queue.values():
                if (e.seq > p.cursor and e.delivered_at is not None and e.delivered_at <= p.since
                        and now - e.delivered_at >= self.redeliver_after):
                    e.delivered_at = None
                    self.counters["redelivered"] += 1

    def _push_unseq(self, msg: Message) -> None:
        self._unseq.append(msg)
        while len(self._unseq) > _UNSEQ_MAX:
            self._unseq.popleft()

    def _next_wire(self, length: int, now: float | None = None) -> bytes | None:
        """The bytes of the next message to deliver into a READ of `length`, or None."""
        bs = self.geometry.block_size
        if self._unseq:
            self.counters["messages_out"] += 1
            return encode(self._unseq.popleft(), self._key, block_size=bs, pad_to=length)
        cur = self._current
        if cur is None:
            return None
        for e in self._queue.values():
            if e.delivered_at is None:
                e.delivered_at = self._clock() if now is None else now
                self._delivered_hi = max(self._delivered_hi, e.seq)
                if e.wire is None or e.wire[0] != cur.epoch:
                    msg = Message(e.body, self.port_index, cur.epoch, e.request_id, e.seq)
                    e.wire = (cur.epoch, encode(msg, self._key, block_size=bs, pad_to=length))
                self.counters["messages_out"] += 1
                return e.wire[1]
        return None

    def _heartbeat(self, length: int) -> bytes:
        self.counters["heartbeats"] += 1
        epoch = self._current.epoch if self._current else 0
        msg = Message(Heartbeat(), self.port_index, epoch, 0, self._issued)
        return encode(msg, self._key, block_size=self.geometry.block_size, pad_to=length)

    def _fill_parked(self) -> list[tuple[Pending, ScsiResponse]]:
        """Several queued messages complete several parked READs at once. Newest READ first: the
        oldest are the likeliest orphans of an agent that restarted, and the heartbeat recycles them."""
        out = []
        now = self._clock()
        while self._parked:
            k, p = next(reversed(self._parked.items()))
            wire = self._next_wire(p.length, now)
            if wire is None:
                break
            del self._parked[k]
            out.append((p.pending, self._good(wire)))
        return out

    @staticmethod
    def _good(data: bytes) -> ScsiResponse:
        return ScsiResponse(ScsiStatus.GOOD, data)

    @staticmethod
    def _resolve(resolutions: list[tuple[Pending, ScsiResponse]]) -> None:
        for pending, resp in resolutions:
            pending.resolve(resp)
