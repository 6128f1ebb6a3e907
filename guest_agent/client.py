"""ChannelClient: the agent end of the control channel, sans-IO (no disk, no threads, injectable clock).

Not thread-safe, and it need not be: its one threaded user, the I/O edge (guest_agent.disk's
ControlDiskEndpoint), makes every call under its own lock, and the commands go through that lock
too (`ep.call`). The edge asks it which READ or WRITE to issue next and reports what came
back; it returns the upstream messages in sequence order, each exactly once. The rules (in
docs/protocol.md section 8):

* every sealed WRITE's header carries the acknowledgement "consumed up to" (`ack`): only that
  drops messages from the host's queue. When no request is going out, an ACK (sequence 0, answered
  by nothing) carries it: after ACK_BATCH unacknowledged messages, ACK_DELAY after the first of
  them, or at once when a request WRITE was refused (e.g. QUEUE_FULL: that WRITE's bytes, and so
  its ack, are fixed, and only a newer ack makes room);
* every READ's LBA carries the same cursor as a hint (it makes the host redeliver what it sees was
  lost; anyone can issue READs, so it acknowledges nothing) and a lane that is unique among the
  outstanding READs (no two parked READs ever share or neighbour an LBA, so none merge); before an
  epoch is established READs use the no-cursor lane;
* upstream messages arrive in any order across parallel READs, and some twice (redeliveries):
  duplicates (sequence <= cursor) are dropped, early ones buffered until the gap fills;
* one WRITE at a time; a failed WRITE is issued again with the same LBA and payload, so the host
  recognises the retry and acts on the message once;
* APP_START challenge-response first: it yields the epoch's keys (`EpochKeys`); every later message
  is sealed under them. A heartbeat (MAC'd under the channel key) of another epoch, or an
  authenticated message of another epoch, on a READ issued after the handshake means the host's
  epoch changed (edifd restarted): handshake again. A sealed message of an epoch we hold no keys
  for proves nothing and is only counted.

Responses are also kept by request id (`take_responses`, `response`). Requests whose answer can
no longer come (the host restarted: HOST_RESET, or their WRITE was abandoned with its epoch) get a
local RESPONSE(FAILED, detail=LOST_DETAIL) with epoch 0 and sequence 0, so no caller waits forever.
"""

from __future__ import annotations

import enum
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edifd.proto import (
    Ack,
    AppStart,
    AppStartAnswer,
    AppStartChallenge,
    AppStartPhase,
    Body,
    ChannelKey,
    Direction,
    EpochKeys,
    HostReset,
    Kind,
    Message,
    MessageType,
    ProtocolError,
    Response,
    Status,
    UnknownEpochError,
    agent_proof,
    decode,
    encode,
    new_nonce,
    verify_host_proof,
)
from edifd.proto.lba import CURSOR_LANES, LANES, NO_CURSOR_LANE, ChannelGeometry
from edifd.proto.reject import Reject
from edifd.scsi import SenseData, SenseParseError

LOST_DETAIL = 0xED1F0001  # RESPONSE.detail of a locally failed request: its answer was lost with its epoch
_BUFFER_MAX = 1024  # early upstream messages held while a gap fills
_HELD_MAX = 256  # messages of the coming epoch that overtook the APP_START answer
_HANDSHAKE_WRITE_TRIES = 3  # a handshake WRITE refused this often: begin a new handshake
ACK_BATCH = 8  # unacknowledged messages that make the agent send an ACK of its own
ACK_DELAY = 0.2  # ... or seconds since the first of them (the host redelivers only after 1 s)


class ClientError(Exception):
    """The edge used the client wrongly (too many outstanding READs, unknown body)."""


class ClientStateError(ValueError):
    """A snapshot given to ChannelClient(state=...) is not a valid client snapshot."""


class Phase(enum.Enum):
    IDLE = "idle"
    HELLO = "hello_sent"
    PROOF = "proof_sent"
    ESTABLISHED = "established"


@dataclass(frozen=True)
class ReadRequest:
    lba: int
    nblocks: int
    token: int


@dataclass(frozen=True)
class WriteRequest:
    lba: int
    payload: bytes
    token: int


@dataclass
class _Write:
    lba: int
    payload: bytes
    request_id: int
    type: MessageType
    handshake: bool
    ack: int = 0  # the acknowledgement this WRITE carries
    token: int = 0
    issued: bool = False
    failed: bool = False
    failures: int = 0


_SNAP = struct.Struct(">4sBBHQQQQ32s32sH")  # ... epoch, cursor, down_next, next_rid, Na, Nh, n
_SNAP_MAGIC = b"EDAG"
_SNAP_VERSION = 2


class ChannelClient:
    def __init__(
        self,
        key: ChannelKey,
        *,
        port_index: int = 0,
        block_size: int = 512,
        capacity_blocks: int,
        parked_reads: int = 4,
        clock: Callable[[], float] = time.monotonic,
        state: bytes | None = None,
        handshake_timeout: float = 10.0,
        keepalive_ms: int = 0,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not 1 <= parked_reads <= CURSOR_LANES:
            raise ValueError(f"parked_reads must be 1..{CURSOR_LANES}")
        if not 0 <= port_index <= 0xFFFF:
            raise ValueError("port_index must be an unsigned 16-bit integer")
        self._key = key
        self.port_index = port_index
        self.parked_reads = parked_reads
        self.geometry = ChannelGeometry(block_size, capacity_blocks)
        self._clock = clock
        self._rng = rng  # handshake nonces: injectable so tests can make them deterministic
        self.handshake_timeout = handshake_timeout
        self.keepalive_ms = keepalive_ms
        self.phase = Phase.IDLE
        self._epoch = 0
        self._keys: EpochKeys | None = None
        self._epoch_nonces = (bytes(32), bytes(32))  # (Na, Nh) of the handshake that made _epoch
        self._gen = 0  # bumped at every established epoch; READs remember the one they were issued in
        self._cursor = 0
        self._buffer: dict[int, Message] = {}
        self._held: list[bytes] = []  # sealed READ data that may belong to the epoch being made
        self._acked = 0  # the highest ack a completed WRITE carried to the host in this epoch
        self._owed_since = 0.0  # when the cursor first moved beyond it
        self._ack_write: _Write | None = None  # an ACK in flight
        self._down_next = 1
        self._next_rid = 1
        self._outbox: deque[tuple[Body, int]] = deque()
        self._outgoing: _Write | None = None
        self._outstanding: dict[int, tuple[MessageType, int]] = {}  # rid -> (type, gen sent in)
        self._responses: dict[int, Message] = {}
        # token -> (place, gen); place: a cursor lane, or LANES + k for slot 2k of the no-cursor lane
        self._reads: dict[int, tuple[int, int]] = {}
        self._token = 0
        self._hs_nonce = b""
        self._hs_host_nonce = b""
        self._hs_rid = 0
        self._hs_started = 0.0
        self.heartbeat_ms = 0
        self.host_sequence = 0  # last upstream number the host said it issued (heartbeats)
        self.counters: dict[str, int] = dict.fromkeys((
            "messages_in", "messages_out", "responses", "events", "heartbeats", "duplicates",
            "out_of_order", "write_retries", "write_failures", "read_failures", "handshakes",
            "handshake_retries", "host_resets", "lost_requests", "orphan_responses", "stale_messages",
            "rejected", "buffer_overflow", "acks_sent",
        ), 0)
        if state is not None:
            self._restore(state)

    # --- handshake ------------------------------------------------------------------------------

    def start(self) -> None:
        """Queue the APP_START handshake (again, if one is running or established)."""
        self._begin_handshake()

    @property
    def established(self) -> bool:
        return self.phase is Phase.ESTABLISHED

    @property
    def awaiting(self) -> frozenset[int]:
        """Request ids whose WRITE the host confirmed and whose answer has not arrived."""
        return frozenset(self._outstanding)

    @property
    def cursor(self) -> int:
        """Every upstream number up to this one has been handed over (exactly once, in order)."""
        return self._cursor

    @property
    def acked(self) -> int:
        """The highest acknowledgement a completed WRITE carried to the host in this epoch."""
        return self._acked

    @property
    def epoch_keys(self) -> EpochKeys | None:
        """The keys of the established epoch (None before one), for tools that decode our WRITEs."""
        return self._keys

    def _begin_handshake(self) -> None:
        self._abandon_outgoing()
        self.phase = Phase.HELLO
        self._hs_nonce = new_nonce(self._rng)
        self._hs_rid = self._new_rid()
        self._hs_started = self._clock()
        self.counters["handshakes"] += 1
        body = AppStart(AppStartPhase.HELLO, self._hs_nonce, keepalive_ms=self.keepalive_ms)
        self._outgoing = self._build(body, self._hs_rid, epoch=0, seq=0, handshake=True)

    def _check_handshake_timer(self) -> None:
        waiting = self.phase in (Phase.HELLO, Phase.PROOF)
        if waiting and self._clock() - self._hs_started >= self.handshake_timeout:
            self.counters["handshake_retries"] += 1
            self._begin_handshake()

    def _establish(self, epoch: int, base: int, heartbeat_ms: int) -> list[Message]:
        self.phase = Phase.ESTABLISHED
        self._epoch = epoch
        self._epoch_nonces = (self._hs_nonce, self._hs_host_nonce)
        self._keys = EpochKeys.derive(self._key, self.port_index, self._hs_nonce, self._hs_host_nonce, epoch)
        self._acked, self._ack_write, self._owed_since = base, None, self._clock()
        self._gen += 1
        self._down_next = 1
        self.heartbeat_ms = heartbeat_ms
        # The host (re)sends everything after `base` in this epoch; what we consumed beyond it
        # (a resumed agent) it sends again and we drop as duplicates.
        self._cursor = max(self._cursor, base)
        self._buffer.clear()
        self._outgoing = None
        out: list[Message] = []
        held, self._held = self._held, []
        for data in held:
            try:
                m = decode(data, self._key, keys=self._keys)
            except ProtocolError:  # another epoch's, or not for us
                self.counters["stale_messages"] += 1
                continue
            if m.direction is Direction.UPSTREAM and m.sequence:
                out += self._accept(m)
        return out

    def _host_changed(self) -> None:
        """The host's epoch changed under us (edifd restarted, or another APP_START)."""
        self.counters["host_resets"] += 1
        self._begin_handshake()

    # --- requests -------------------------------------------------------------------------------

    def request(self, body: Body) -> int:
        """Queue a request; returns its request id. Sent once the channel is established."""
        if not isinstance(body, Body) or body.TYPE.kind is not Kind.REQUEST or isinstance(body, AppStart):
            raise ClientError("request() takes a request body other than APP_START")
        rid = self._new_rid()
        self._outbox.append((body, rid))
        return rid

    def take_responses(self) -> dict[int, Message]:
        """Every response received so far and not yet taken, by request id."""
        out, self._responses = self._responses, {}
        return out

    def response(self, request_id: int) -> Message | None:
        """The response to one request, if it has arrived (taken: a second call returns None)."""
        return self._responses.pop(request_id, None)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding) + len(self._outbox) + (self._outgoing is not None)

    def _new_rid(self) -> int:
        rid = self._next_rid
        self._next_rid = rid + 1 if rid < (1 << 64) - 1 else 1
        return rid

    def _build(self, body: Body, rid: int, *, epoch: int, seq: int, handshake: bool) -> _Write:
        """The WRITE of one message. Built once: a retry resends these bytes (the same ack too), so
        the host recognises it and no (key, nonce) ever seals two different bodies."""
        ack = self._cursor if epoch else 0
        msg = Message(body, self.port_index, epoch, rid, seq, ack)
        payload = encode(msg, self._key, keys=self._keys, block_size=self.geometry.block_size)
        return _Write(self.geometry.write_lba(seq), payload, rid, msg.type, handshake, ack=ack)

    def _ack_due(self, refused: bool) -> bool:
        owed = self._cursor - self._acked
        if owed <= 0 or self._ack_write is not None:
            return False
        return refused or owed >= ACK_BATCH or self._clock() - self._owed_since >= ACK_DELAY

    def _abandon_outgoing(self) -> None:
        w = self._outgoing
        self._outgoing = None
        if w is not None and not w.handshake:
            self._lose(w.request_id, w.type)

    def _lose(self, rid: int, mtype: MessageType) -> Message:
        self.counters["lost_requests"] += 1
        m = Message(Response(mtype, Status.FAILED, LOST_DETAIL), self.port_index, 0, rid, 0)
        self._responses[rid] = m
        return m

    # --- WRITE side -----------------------------------------------------------------------------

    def next_write(self) -> WriteRequest | None:
        """The WRITE to issue now: a new message, or the failed one again (same LBA and payload).
        None while one is in flight or nothing is to be sent."""
        self._check_handshake_timer()
        w = self._outgoing
        if self.phase is Phase.ESTABLISHED and (w is None and not self._outbox or w is not None and w.failed
                                                 and not w.handshake):
            if self._ack_due(refused=w is not None):
                # Nothing else to say but what we consumed (the host holds it until told), or the
                # request WRITE is being refused and its ack is stale: an ACK first.
                return self._issue_ack()
        if w is None and self.phase is Phase.ESTABLISHED and self._outbox:
            body, rid = self._outbox.popleft()
            w = self._build(body, rid, epoch=self._epoch, seq=self._down_next, handshake=False)
            self._down_next += 1
            self._outgoing = w
        if w is None or (w.issued and not w.failed):
            return None
        if w.failed:
            self.counters["write_retries"] += 1
        self._token += 1
        w.token, w.issued, w.failed = self._token, True, False
        return WriteRequest(w.lba, w.payload, w.token)

    def _issue_ack(self) -> WriteRequest:
        msg = Message(Ack(), self.port_index, self._epoch, 0, 0, self._cursor)
        payload = encode(msg, self._key, keys=self._keys, block_size=self.geometry.block_size)
        self._token += 1
        self._ack_write = _Write(self.geometry.write_lba(0), payload, 0, MessageType.ACK, False,
                                 token=self._token, issued=True, ack=self._cursor)
        self.counters["acks_sent"] += 1
        return WriteRequest(self._ack_write.lba, payload, self._token)

    def final_ack(self) -> WriteRequest | None:
        """At a clean stop: one ACK of everything consumed, so that whoever takes over next (a
        restart without state) starts beyond it. None if nothing is owed or an ACK is in flight."""
        if self.phase is not Phase.ESTABLISHED or self._ack_write is not None or self._cursor <= self._acked:
            return None
        return self._issue_ack()

    def _carried(self, ack: int) -> None:
        """A WRITE carrying `ack` reached the host."""
        if ack > self._acked:
            self._acked = ack
            self._owed_since = self._clock()  # for what arrives beyond it

    def write_done(self, token: int, ok: bool, sense: bytes = b"") -> None:
        """Outcome of a WRITE. A failure makes next_write() issue it again; sense (when the edge has
        it, e.g. SG_IO) can tell that the epoch is gone."""
        a = self._ack_write
        if a is not None and a.token == token:
            self._ack_write = None  # a failed ACK is not retried as such: the next one is newer
            if ok:
                self._carried(a.ack)
            elif _reject_of(sense) is Reject.STALE_EPOCH and self.phase is Phase.ESTABLISHED:
                self._host_changed()
            return
        w = self._outgoing
        if w is None or w.token != token or not w.issued:
            return  # a WRITE abandoned meanwhile (new handshake)
        if ok:
            self._outgoing = None
            if not w.handshake:
                self._carried(w.ack)
            self.counters["messages_out"] += 1
            if not w.handshake:
                self._outstanding[w.request_id] = (w.type, self._gen)
            return
        w.failed = True
        w.failures += 1
        self.counters["write_failures"] += 1
        reason = _reject_of(sense)
        if reason is Reject.STALE_EPOCH and not w.handshake and self.phase is Phase.ESTABLISHED:
            self._host_changed()
        elif w.handshake and w.failures >= _HANDSHAKE_WRITE_TRIES:
            # e.g. a PROOF for a challenge that died with an edifd restart: start over now
            # rather than at the handshake timeout.
            self.counters["handshake_retries"] += 1
            self._begin_handshake()

    # --- READ side ------------------------------------------------------------------------------

    def next_read(self) -> ReadRequest:
        """A READ to park: its LBA carries the cursor and a lane free among the outstanding READs.
        Without an epoch (handshake), READs go to the no-cursor lane: they acknowledge nothing."""
        self._check_handshake_timer()
        busy = {place for place, _ in self._reads.values()}
        g = self.geometry
        if self.phase is Phase.ESTABLISHED:
            places = range(CURSOR_LANES)
        else:
            places = range(LANES, 2 * LANES)
        place = next((i for i in places if i not in busy), None)
        if place is None:
            raise ClientError(f"at most {len(places)} READs may be outstanding")
        self._token += 1
        self._reads[self._token] = (place, self._gen)
        if place < LANES:
            lba = g.read_lba(self._cursor, place)
        else:
            lba = g.read_lba(2 * (place - LANES), NO_CURSOR_LANE)
        return ReadRequest(lba, g.slot_blocks, self._token)

    def read_failed(self, token: int) -> None:
        self._reads.pop(token, None)
        self.counters["read_failures"] += 1

    def read_done(self, token: int, data: bytes) -> list[Message]:
        """A READ completed: the upstream messages now deliverable, in order, each exactly once.

        Data that is no message for us (does not decode, wrong MAC, not upstream) returns [] and counts
        ``counters["rejected"]``; the edge (guest_agent.disk) backs off before it READs again."""
        _, gen = self._reads.pop(token, (0, -1))
        try:
            m = decode(data, self._key, keys=self._keys)
        except UnknownEpochError:
            # Sealed under keys we do not hold: the epoch our PROOF is creating (held until its
            # ANSWER gives us the keys), or an old or foreign one: unauthenticated, so it proves
            # nothing and counts as data that is no message for us (the edge backs off).
            if self.phase is Phase.PROOF and len(self._held) < _HELD_MAX:
                self._held.append(bytes(data))
            else:
                self.counters["rejected"] += 1
            return []
        except ProtocolError:
            self.counters["rejected"] += 1
            return []
        if m.direction is not MessageType.HEARTBEAT.direction:
            self.counters["rejected"] += 1
            return []
        current_read = gen == self._gen and self.phase is Phase.ESTABLISHED
        if m.type is MessageType.HEARTBEAT:
            self.counters["heartbeats"] += 1
            if self.phase is Phase.ESTABLISHED and m.epoch == self._epoch:
                self.host_sequence = max(self.host_sequence, m.sequence)
            elif current_read:
                self._host_changed()
            return []
        if m.epoch == 0:
            return self._unsequenced(m)
        if self.phase is Phase.ESTABLISHED and m.epoch == self._epoch:
            return self._accept(m)
        if current_read:
            self._host_changed()
            return []
        self.counters["stale_messages"] += 1
        return []

    def _unsequenced(self, m: Message) -> list[Message]:
        body = m.body
        if isinstance(body, AppStartChallenge):
            mine = m.request_id == self._hs_rid and body.agent_nonce == self._hs_nonce
            if self.phase is Phase.HELLO and mine:
                self._hs_host_nonce = body.host_nonce
                proof = agent_proof(self._key, self.port_index, self._hs_nonce, body.host_nonce)
                pbody = AppStart(AppStartPhase.PROOF, self._hs_nonce, body.host_nonce, proof,
                                 self.keepalive_ms)
                self._outgoing = self._build(pbody, self._hs_rid, epoch=0, seq=0, handshake=True)
                self.phase = Phase.PROOF
            else:
                self.counters["stale_messages"] += 1
            return []
        if isinstance(body, AppStartAnswer):
            if (self.phase is Phase.PROOF and m.request_id == self._hs_rid and verify_host_proof(
                    self._key, self.port_index, self._hs_nonce, self._hs_host_nonce, body.epoch, body.proof)):
                return self._establish(body.epoch, m.sequence, body.heartbeat_ms)
            self.counters["stale_messages"] += 1
            return []
        if m.kind is Kind.RESPONSE and m.request_id in self._outstanding:
            return self._deliver(m)
        self.counters["stale_messages"] += 1  # e.g. NOT_STARTED for an abandoned handshake
        return []

    def _accept(self, m: Message) -> list[Message]:
        s = m.sequence
        if s <= self._cursor or s in self._buffer:
            self.counters["duplicates"] += 1
            return []
        if s > self._cursor + 1:
            if len(self._buffer) >= _BUFFER_MAX:
                self.counters["buffer_overflow"] += 1
                return []
            self.counters["out_of_order"] += 1
        self._buffer[s] = m
        out: list[Message] = []
        while self._cursor + 1 in self._buffer:
            self._cursor += 1
            out += self._deliver(self._buffer.pop(self._cursor))
        return out

    def _deliver(self, m: Message) -> list[Message]:
        out = [m]
        if self._cursor - 1 <= self._acked:  # the first one the host has no ack for
            self._owed_since = self._clock()
        self.counters["messages_in"] += 1
        if m.kind is Kind.RESPONSE:
            self.counters["responses"] += 1
            w = self._outgoing
            if w is not None and not w.handshake and w.request_id == m.request_id:
                # Answered before its WRITE status came back (or the status was lost): the host
                # has acted on it, so there is nothing left to retry.
                self._outgoing = None
            elif self._outstanding.pop(m.request_id, None) is None:
                # The answer to a request of an earlier incarnation (a crash, or a predecessor that
                # stopped before acknowledging it): nobody here asked, and its request id may be one
                # this incarnation is about to use. Consumed, not handed over.
                self.counters["orphan_responses"] += 1
                return []
            self._responses[m.request_id] = m
        else:
            self.counters["events"] += 1
        if isinstance(m.body, HostReset):
            # The host restarted: requests sent in earlier epochs will never be answered.
            for rid, (mtype, gen) in list(self._outstanding.items()):
                if gen < self._gen:
                    del self._outstanding[rid]
                    out.append(self._lose(rid, mtype))
        return out

    # --- restart --------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """State for resuming after an agent restart: epoch, the handshake nonces it came from (public:
        they crossed the disk in clear; with the channel key they give the epoch's keys again),
        cursor, sequence and request-id counters, outstanding request ids. No key, no message
        content. A snapshot taken while a WRITE is unconfirmed is marked in-doubt: resuming from it
        runs APP_START again (so no sequence number is ever sealed twice with other content)."""
        w = self._outgoing
        in_doubt = self.phase is not Phase.ESTABLISHED or (w is not None and not w.handshake)
        outs = sorted(self._outstanding.items())[:0xFFFF]
        na, nh = self._epoch_nonces
        head = _SNAP.pack(_SNAP_MAGIC, _SNAP_VERSION, int(in_doubt), self.port_index, self._epoch,
                          self._cursor, self._down_next, self._next_rid, na, nh, len(outs))
        body = head + b"".join(struct.pack(">QB", rid, t) for rid, (t, _) in outs)
        return body + struct.pack(">I", zlib.crc32(body))

    def _restore(self, state: bytes) -> None:
        try:
            data = bytes(state)
            if len(data) < _SNAP.size + 4 or zlib.crc32(data[:-4]) != struct.unpack(">I", data[-4:])[0]:
                raise ClientStateError("snapshot is truncated or its CRC does not match")
            (magic, version, in_doubt, port, epoch, cursor, down_next, next_rid, na, nh,
             n) = _SNAP.unpack_from(data)
            if magic != _SNAP_MAGIC or version != _SNAP_VERSION or in_doubt > 1:
                raise ClientStateError(f"not a channel client snapshot of version {_SNAP_VERSION}")
            if port != self.port_index:
                raise ClientStateError(f"snapshot is for port {port}, not {self.port_index}")
            if len(data) != _SNAP.size + 9 * n + 4 or not next_rid or not down_next:
                raise ClientStateError("snapshot length or counters are inconsistent")
            outs = [struct.unpack_from(">QB", data, _SNAP.size + 9 * i) for i in range(n)]
            types = [MessageType(t) for _, t in outs]
        except ClientStateError:
            raise
        except (struct.error, ValueError, TypeError) as e:
            raise ClientStateError(f"snapshot is not readable: {type(e).__name__}") from None
        self._cursor, self._next_rid = cursor, next_rid
        if in_doubt or not epoch:
            return  # start() runs APP_START; the cursor still drops what we already consumed
        self.phase, self._epoch, self._down_next, self._gen = Phase.ESTABLISHED, epoch, down_next, 1
        self._epoch_nonces = (na, nh)
        self._keys = EpochKeys.derive(self._key, self.port_index, na, nh, epoch)
        self._outstanding = {rid: (t, 1) for (rid, _), t in zip(outs, types, strict=True)}


def _reject_of(sense: bytes) -> Reject | None:
    if not sense:
        return None
    try:
        s = SenseData.parse(sense)
    except SenseParseError:
        return None
    return Reject.from_sense(s.key, s.asc, s.ascq)
