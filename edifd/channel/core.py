"""ChannelCore: the host end of the control channel, as the `Medium` of the control LUN's ScsiDisk.

WRITE -> decode -> authorize -> apply its ack -> (once) dispatch; READ -> take its cursor as a hint ->
deliver or park.
The delivery rules are specified in docs/protocol.md section 8; in short:

* downstream: every message of an epoch is sealed (AES-256-GCM under the epoch's key, from the
  APP_START handshake); the WRITE slot and the header carry the sequence; expected -> act once;
  lower -> a retry (same tag) is GOOD and not acted on again, anything else is a replay; higher ->
  a gap, refused so the agent resends in order (`downstream.Downstream`);
* upstream: every response and event gets the next sequence number of this LUN (never reused
  while the state file lives, across epochs); it stays queued until the `ack` of a sealed WRITE of
  the current epoch covers it — a READ's cursor is a hint anyone on the LUN can forge, so it can
  trigger a redelivery but never drop anything — and is delivered again if a later READ shows its
  first delivery never arrived (`upstream.UpstreamQueue`);
* parked READs complete with a MAC'd heartbeat after park_time; several queued messages complete
  several parked READs at once; every READ buffer is filled completely (`parking.ParkedReads`).

Sans-IO: no sockets, files or clocks of its own (the clock, the randomness and the state-persisting
callable are injected). Thread-safe: the ring owner calls read/write, a ticker calls tick(), the HBA
side calls post_event() and resolves Deferreds from its own threads. Pendings are resolved outside
the lock.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from threading import Lock

from edifd.proto import (
    HEADER_SIZE,
    MAC_SIZE,
    AppStart,
    AppStartPhase,
    AppStop,
    Body,
    ChannelKey,
    Direction,
    EpochKeys,
    EventAck,
    HostReset,
    Keepalive,
    Kind,
    Message,
    ProtocolError,
    Response,
    Resync,
    Status,
    UnknownEpochError,
    check_response,
    decode,
    peek_header,
)
from edifd.proto.handshake import Rng
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
from .downstream import Downstream, Refusal
from .handler import BasicHandler, Deferred, RequestHandler, StateProvider, StaticState, state_events
from .hoststate import HostState
from .parking import Parked, ParkedReads
from .upstream import UpstreamQueue

log = logging.getLogger("edifd.channel")

# The header's tag or MAC identifies a message's exact content (a retry resends the same bytes).
_AUTH = slice(HEADER_SIZE - MAC_SIZE, HEADER_SIZE)

COUNTERS = (
    "messages_in", "messages_out", "redelivered", "heartbeats", "reads_parked", "retries",
    "events_posted", "events_lost", "resyncs", "handshakes", "epochs", "not_started",
    "acks", "stale_cursors", "bad_acks", "scan_reads", "bad_reads", "agent_silent",
) + tuple(f"rejected_{r.counter}" for r in Reject)

_Resolutions = list[tuple[Pending, ScsiResponse]]


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
        rng: Rng = secrets.token_bytes,
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

        self._down = Downstream(key, port_index, rng, restored)
        self._up = UpstreamQueue(
            key, port_index=port_index, geometry=self.geometry, queue_limit=queue_limit,
            redeliver_after=redeliver_after, counters=self.counters,
            issued=restored.up_reserved if restored is not None else 0, on_reserve=self._save)
        self._parked = ParkedReads()
        self._closing = False
        self._keepalive = 0.0  # seconds the agent promised between messages (APP_START keepalive_ms)
        self._last_heard = 0.0
        self._silent = False  # agent_silent already reported for this silence
        if self._down.previous is not None:
            # The HBA and every SA went with the old process: say so first in the next epoch.
            self._up.enqueue(HostReset(), 0)
            self.counters["events_posted"] += 1
        self._up.reserve(force=True)

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
            cursor = None if lane == NO_CURSOR_LANE else self._up.hint(residue, now)
            wire = self._next_wire(length, now)
            if wire is not None:
                return wire
            if self._closing:  # nothing parks any more: LUN removal and shutdown never wait on us
                return self._heartbeat(length)
            pending = Pending(req.command)
            self._parked.park(Parked(pending, now, length, cursor))
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
        with self._lock:
            keys = self._down.keys
        try:
            msg = decode(data, self._key, keys=keys)
        except UnknownEpochError as e:
            peek = peek_header(data)
            with self._lock:
                if peek is not None and self._down.is_keyless_retry(*peek):
                    self.counters["retries"] += 1
                    return None
            raise self._reject(where, Reject.STALE_EPOCH, f"{e.reason}: {e}") from None
        except ProtocolError as e:
            raise self._reject(where, Reject.of_protocol_error(e), f"{e.reason}: {e}") from None
        if msg.direction is not Direction.DOWNSTREAM:
            raise self._reject(where, Reject.MALFORMED, f"{msg.type.name} is not a downstream message")
        if msg.port_index != self.port_index:
            raise self._reject(where, Reject.WRONG_PORT,
                               f"port index {msg.port_index}, LUN is {self.port_index}")
        if residue != msg.sequence % self.geometry.window:
            raise self._reject(where, Reject.SLOT_MISMATCH, "WRITE slot does not match the header sequence")
        mac = bytes(data[_AUTH])
        resolutions: _Resolutions = []
        with self._lock:
            try:
                if isinstance(msg.body, AppStart):
                    if self._app_start(msg):
                        # READs parked now may be orphans of an agent that restarted: its handshake
                        # answer must not vanish into one. They get a heartbeat; live agents re-arm.
                        resolutions = self._heartbeat_all()
                    act = False
                elif msg.kind is Kind.ACKNOWLEDGEMENT:
                    self._acknowledge(msg)
                    resolutions = self._fill_parked()  # room for an overflow report, perhaps
                    act = False
                elif msg.epoch == 0:
                    if msg.sequence != 0:
                        raise Refusal(Reject.MALFORMED, "sequence without an epoch")
                    self._up.push_unsequenced(Message(Response(msg.type, Status.NOT_STARTED),
                                                      self.port_index, 0, msg.request_id, 0))
                    self.counters["not_started"] += 1
                    resolutions = self._fill_parked()
                    act = False
                else:
                    act = self._admit(msg, mac)
                    resolutions = self._fill_parked()  # its ack may have made room for an overflow report
            except Refusal as r:
                raise self._reject_locked(where, r.reason, r.detail) from None
        self._resolve(resolutions)
        if act:
            self._dispatch(msg)

    def flush(self, req: IoRequest) -> None:
        return None

    def abort(self, cmd: ScsiCommand) -> None:
        """The transport ended a parked READ (TMR, ring reset): forget it."""
        with self._lock:
            self._parked.abort(cmd)

    # --- the HBA side ---------------------------------------------------------------------------

    def post_event(self, body: Body) -> int | None:
        """Queue an upstream event (any thread). Returns its sequence number, or None if the queue
        was full and it was dropped (an EVENT_OVERFLOW reports the loss)."""
        if body.TYPE.kind is not Kind.EVENT:
            raise ValueError(f"{body.TYPE.name} is not an event")
        with self._lock:
            seq = self._up.post_event(body)
            resolutions = self._fill_parked()
        self._resolve(resolutions)
        return seq

    def tick(self) -> int:
        """Heartbeat parked READs due, and redeliver what a parked READ shows was lost. Returns how
        many READs completed."""
        with self._lock:
            now = self._clock()
            for p in self._parked:
                if p.cursor is not None:
                    self._up.redeliver_before(p.cursor, p.since, now)
            resolutions = self._fill_parked()
            for p in self._parked.take_due(now, self.park_time):
                resolutions.append((p.pending, self._good(self._heartbeat(p.length))))
            silent = (self._down.current is not None and self._keepalive > 0 and not self._silent
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

    def close(self) -> int:
        """Stop parking: complete what is parked and answer later READs at once."""
        with self._lock:
            self._closing = True
        return self.release_all()

    @property
    def established(self) -> bool:
        return self._down.current is not None

    @property
    def epoch_keys(self) -> tuple[EpochKeys, ...]:
        """The epoch keys held (current, previous), for tools and tests that decode this LUN's
        traffic. Objects only: they never print their key bytes."""
        with self._lock:
            return self._down.keys

    @property
    def parked(self) -> tuple[float, ...]:
        """When each parked READ arrived (len(): how many; edifctl status shows it)."""
        with self._lock:
            return tuple(p.since for p in self._parked)

    def status(self) -> dict[str, object]:
        """For edifctl and logs: counters and queue figures, never key material."""
        with self._lock:
            cur = self._down.current
            return {
                "established": cur is not None,
                "parked": len(self._parked),
                "queued": len(self._up),
                "upstream_issued": self._up.issued,
                "upstream_acked": self._up.acked,
                "downstream_next": cur.down_next if cur else 0,
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

    def _admit(self, msg: Message, mac: bytes) -> bool:
        """An authenticated request with an epoch. True: act on it now.

        A request the sequence rules refuse changes nothing; one they admit (or recognise as a retry)
        has its ack applied (`_apply_ack`) before the queue-full check: that is what makes room."""
        fresh = self._down.check(msg.epoch, msg.sequence, mac)
        self._apply_ack(msg)
        if not fresh:
            self.counters["retries"] += 1
            return False
        if self._up.full:
            raise Refusal(Reject.QUEUE_FULL, f"{len(self._up)} messages queued")
        self._down.advance(msg.sequence, mac)
        self._last_heard, self._silent = self._clock(), False
        self._save()
        self.counters["messages_in"] += 1
        return True

    def _apply_ack(self, msg: Message) -> None:
        """The ack of an authenticated message drops what it covers, but only in the current epoch (a
        dead agent's late WRITE or ACK of an earlier epoch must not drop what the new one has not
        seen)."""
        cur = self._down.current
        if cur is not None and msg.epoch == cur.epoch:
            self._up.ack(msg.ack)

    def _acknowledge(self, msg: Message) -> None:
        """An ACK: nothing but its ack (`_apply_ack`), and only of the current epoch."""
        cur = self._down.current
        if cur is None or msg.epoch != cur.epoch:
            raise Refusal(Reject.STALE_EPOCH, "ACK of another epoch")
        self.counters["acks"] += 1
        self._last_heard, self._silent = self._clock(), False
        self._apply_ack(msg)

    def _app_start(self, msg: Message) -> bool:
        """Handshake step; True if it queued an answer (False: a recognised retry)."""
        body = msg.body
        assert isinstance(body, AppStart)
        if msg.epoch != 0 or msg.sequence != 0:
            raise Refusal(Reject.MALFORMED, "APP_START carries epoch 0 and sequence 0")
        if body.phase is AppStartPhase.HELLO:
            challenge = self._down.hello(body.agent_nonce)
            if challenge is None:
                self.counters["retries"] += 1  # the same HELLO again: keep the challenge we sent
                return False
            self._up.push_unsequenced(Message(challenge, self.port_index, 0, msg.request_id, 0))
            self.counters["handshakes"] += 1
            return True
        answer = self._down.prove(body, heartbeat_ms=int(self.park_time * 1000))
        if answer is None:
            self.counters["retries"] += 1
            return False
        self._keepalive, self._last_heard, self._silent = body.keepalive_ms / 1000, self._clock(), False
        self._up.restart()
        # Header sequence of the ANSWER = the last upstream number the agent needs no more.
        self._up.push_unsequenced(Message(answer, self.port_index, 0, msg.request_id, self._up.acked))
        self.counters["epochs"] += 1
        self._save()
        log.info("%s: channel established (port %d), upstream from %d", self.name, self.port_index,
                 self._up.acked)
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
                        self._up.post_event(ev)
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
            self._up.enqueue(body, request.request_id)
            resolutions = self._fill_parked()
        self._resolve(resolutions)

    # --- upstream --------------------------------------------------------------------------------

    def _save(self) -> None:
        if self._persist is None:
            return
        epoch, down_next, last_mac = self._down.persisted
        self._persist(HostState(self.port_index, epoch, down_next, self._up.reserved, last_mac))

    def _next_wire(self, length: int, now: float) -> bytes | None:
        cur = self._down.current
        return self._up.next_wire(length, cur.keys if cur else None, now)

    def _heartbeat(self, length: int) -> bytes:
        cur = self._down.current
        return self._up.heartbeat(length, cur.epoch if cur else 0)

    def _fill_parked(self) -> _Resolutions:
        """Several queued messages complete several parked READs at once. Newest READ first: the
        oldest are the likeliest orphans of an agent that restarted, and the heartbeat recycles them."""
        out = []
        now = self._clock()
        while (p := self._parked.newest()) is not None:
            wire = self._next_wire(p.length, now)
            if wire is None:
                break
            self._parked.remove(p)
            out.append((p.pending, self._good(wire)))
        return out

    def _heartbeat_all(self) -> _Resolutions:
        return [(p.pending, self._good(self._heartbeat(p.length))) for p in self._parked.take_all()]

    @staticmethod
    def _good(data: bytes) -> ScsiResponse:
        return ScsiResponse(ScsiStatus.GOOD, data)

    @staticmethod
    def _resolve(resolutions: _Resolutions) -> None:
        for pending, resp in resolutions:
            pending.resolve(resp)
