"""Hypothesis strategies for every message of the catalogue (test helper; needs hypothesis).

Used by edifd's own tests; the channel and agent tests can import it to generate valid traffic.
"""

from __future__ import annotations

from hypothesis import strategies as st

from edifd.proto.body import BODY_CLASSES, Body
from edifd.proto.catalogue import Direction, Kind, MessageType
from edifd.proto.codec import Message
from edifd.proto.codes import (
    ELS_MAX_PAYLOAD,
    AppStartPhase,
    AuthFailReason,
    AuthState,
    Cipher,
    CipherMask,
    ElsReplyAction,
    ElsResult,
    LinkState,
    PortFlags,
    PortState,
    RoleFlags,
    SaDirection,
    SaFlags,
    SaStatus,
    ShutdownReason,
    Status,
    StopReason,
    TargetFlags,
)
from edifd.proto.events import (
    AuthNeeded,
    ElsRcvd,
    EventOverflow,
    Heartbeat,
    HostReset,
    LinkDown,
    LinkUp,
    PortOffline,
    PortOnline,
    SaUpdateCompl,
    SessionShutdown,
    TargetGone,
)
from edifd.proto.ports import PortRef
from edifd.proto.requests import (
    Ack,
    AppStart,
    AppStop,
    AuthFail,
    AuthOk,
    ElsReply,
    ElsSend,
    EventAck,
    GetPortInfo,
    GetStats,
    GetTargets,
    Keepalive,
    Resync,
    SaUpdate,
    SecureConnect,
)
from edifd.proto.responses import (
    MAX_STATS_ENTRIES,
    MAX_TARGET_ENTRIES,
    AppStartAnswer,
    AppStartChallenge,
    ElsResponse,
    PortInfo,
    Response,
    Stats,
    StatsEntry,
    TargetEntry,
    TargetList,
)


def uint(bits: int) -> st.SearchStrategy[int]:
    # Bias towards the edges, where off-by-one and sign bugs live.
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from([0, 1, top - 1, top]), st.integers(0, top))


def flags(cls: type) -> st.SearchStrategy:
    members = list(cls)
    return st.sets(st.sampled_from(members)).map(lambda s: cls(sum(m.value for m in s)))


nonces = st.binary(min_size=32, max_size=32)
port_refs = st.builds(PortRef, uint(64), uint(24), uint(32))
els_payloads = st.binary(min_size=1, max_size=ELS_MAX_PAYLOAD)
spis = st.integers(1, (1 << 32) - 1)


@st.composite
def app_starts(draw: st.DrawFn) -> AppStart:
    phase = draw(st.sampled_from(AppStartPhase))
    if phase is AppStartPhase.HELLO:
        return AppStart(phase, draw(nonces), keepalive_ms=draw(uint(32)))
    return AppStart(phase, draw(nonces), draw(nonces), draw(nonces), draw(uint(32)))


@st.composite
def els_replies(draw: st.DrawFn) -> ElsReply:
    action = draw(st.sampled_from(ElsReplyAction))
    payload = b"" if action is ElsReplyAction.TERMINATE else draw(els_payloads)
    return ElsReply(draw(port_refs), draw(uint(32)), action, payload)


@st.composite
def sa_updates(draw: st.DrawFn) -> SaUpdate:
    port, spi = draw(port_refs), draw(spis)
    direction = draw(st.sampled_from(SaDirection))
    cipher = draw(st.sampled_from(Cipher))
    if draw(st.booleans()):
        force = direction is SaDirection.RX and draw(st.booleans())
        f = SaFlags.DELETE | (SaFlags.FORCE_DELETE if force else SaFlags(0))
        return SaUpdate(port, spi, direction, cipher, flags=f)
    key = draw(st.binary(min_size=cipher.key_size, max_size=cipher.key_size))
    salt = draw(st.binary(min_size=4, max_size=4))
    f = SaFlags.REKEY if draw(st.booleans()) else SaFlags(0)
    return SaUpdate(port, spi, direction, cipher, key, salt, f)


event_types = st.sampled_from([t for t in MessageType if t.kind is Kind.EVENT])
request_types = st.sampled_from([t for t in MessageType if t.kind is Kind.REQUEST])


@st.composite
def target_lists(draw: st.DrawFn) -> TargetList:
    entries = draw(
        st.lists(
            st.builds(
                TargetEntry,
                port_refs,
                flags(RoleFlags),
                st.sampled_from(PortState),
                st.sampled_from(AuthState),
                flags(TargetFlags),
            ),
            max_size=MAX_TARGET_ENTRIES,
        )
    )
    start = draw(st.integers(0, (1 << 32) - 1 - len(entries)))
    total = draw(st.integers(start + len(entries), (1 << 32) - 1))
    return TargetList(total, start, tuple(entries))


@st.composite
def stats_pages(draw: st.DrawFn) -> Stats:
    entries = draw(
        st.lists(st.builds(StatsEntry, port_refs, uint(64), uint(64), uint(64)), max_size=MAX_STATS_ENTRIES)
    )
    start = draw(st.integers(0, (1 << 32) - 1 - len(entries)))
    total = draw(st.integers(start + len(entries), (1 << 32) - 1))
    return Stats(total, start, tuple(entries))


_list_query = {"start": uint(32), "max_entries": st.integers(1, 0xFFFF), "wwpn": uint(64)}

BODIES: dict[MessageType, st.SearchStrategy[Body]] = {
    MessageType.APP_START: app_starts(),
    MessageType.APP_STOP: st.builds(AppStop, st.sampled_from(StopReason)),
    MessageType.GET_PORT_INFO: st.just(GetPortInfo()),
    MessageType.GET_TARGETS: st.builds(GetTargets, **_list_query),
    MessageType.SECURE_CONNECT: st.builds(SecureConnect, port_refs),
    MessageType.ELS_SEND: st.builds(ElsSend, port_refs, els_payloads),
    MessageType.ELS_REPLY: els_replies(),
    MessageType.SA_UPDATE: sa_updates(),
    MessageType.AUTH_OK: st.builds(AuthOk, port_refs),
    MessageType.AUTH_FAIL: st.builds(AuthFail, port_refs, st.sampled_from(AuthFailReason)),
    MessageType.EVENT_ACK: st.builds(EventAck, event_types, uint(64), port_refs),
    MessageType.GET_STATS: st.builds(GetStats, **_list_query),
    MessageType.KEEPALIVE: st.just(Keepalive()),
    MessageType.RESYNC: st.just(Resync()),
    MessageType.ACK: st.just(Ack()),
    MessageType.RESPONSE: st.builds(Response, request_types, st.sampled_from(Status), uint(32)),
    MessageType.APP_START_CHALLENGE: st.builds(AppStartChallenge, nonces, nonces),
    MessageType.APP_START_ANSWER: st.builds(
        AppStartAnswer,
        st.integers(1, (1 << 64) - 1),
        nonces,
        uint(32),
        uint(16),
        uint(16),
        uint(8),
        flags(CipherMask),
    ),
    MessageType.PORT_INFO: st.builds(
        PortInfo, uint(64), uint(64), uint(24), st.sampled_from(LinkState), flags(PortFlags), uint(32)
    ),
    MessageType.TARGET_LIST: target_lists(),
    MessageType.STATS: stats_pages(),
    MessageType.ELS_RESPONSE: st.builds(
        ElsResponse, port_refs, st.sampled_from(ElsResult), st.binary(max_size=ELS_MAX_PAYLOAD)
    ),
    MessageType.AUTH_NEEDED: st.builds(AuthNeeded, port_refs, flags(RoleFlags)),
    MessageType.ELS_RCVD: st.builds(ElsRcvd, port_refs, uint(32), els_payloads),
    MessageType.SA_UPDATE_COMPL: st.builds(
        SaUpdateCompl,
        port_refs,
        spis,
        st.sampled_from(SaDirection),
        st.sampled_from(SaStatus),
        uint(16),
        flags(SaFlags),
    ),
    MessageType.SESSION_SHUTDOWN: st.builds(SessionShutdown, port_refs, st.sampled_from(ShutdownReason)),
    MessageType.LINK_UP: st.just(LinkUp()),
    MessageType.LINK_DOWN: st.just(LinkDown()),
    MessageType.PORT_ONLINE: st.builds(PortOnline, port_refs),
    MessageType.PORT_OFFLINE: st.builds(PortOffline, port_refs),
    MessageType.TARGET_GONE: st.builds(TargetGone, port_refs),
    MessageType.HOST_RESET: st.just(HostReset()),
    MessageType.EVENT_OVERFLOW: st.builds(EventOverflow, uint(32)),
    MessageType.HEARTBEAT: st.just(Heartbeat()),
}
assert set(BODIES) == set(BODY_CLASSES) == set(MessageType), "a strategy for every message type"


def _messages_of(msg_type: MessageType) -> st.SearchStrategy[Message]:
    rid = st.integers(1, (1 << 64) - 1) if msg_type.kind in (Kind.REQUEST, Kind.RESPONSE) else st.just(0)
    body = BODIES[msg_type]
    nonzero = st.one_of(st.sampled_from([1, 2, (1 << 64) - 1]), st.integers(1, (1 << 64) - 1))
    if msg_type.kind is Kind.ACKNOWLEDGEMENT:  # always sealed, sequence 0: only its ack varies
        return st.builds(Message, body, port_index=uint(16), epoch=nonzero, request_id=rid, ack=uint(64))
    plain = st.builds(Message, body, port_index=uint(16), epoch=uint(64), request_id=rid, sequence=uint(64))
    if msg_type.direction is Direction.UPSTREAM:
        return plain
    # Downstream and sealed (epoch != 0): an ack may ride along.
    acked = st.builds(
        Message, body, port_index=uint(16), epoch=nonzero, request_id=rid, sequence=uint(64), ack=nonzero
    )
    return st.one_of(plain, acked)


# Built once: a strategy per draw (flatmap) would be re-validated every example, which costs
# more than the test itself.
_BY_TYPE = {t: _messages_of(t) for t in MessageType}
_ANY = st.one_of(*_BY_TYPE.values())


def messages_of(msg_type: MessageType) -> st.SearchStrategy[Message]:
    """Valid messages of one type with arbitrary header fields (sealed when epoch != 0 and not a
    HEARTBEAT; a non-zero ack only on sealed downstream ones)."""
    return _BY_TYPE[msg_type]


def messages() -> st.SearchStrategy[Message]:
    """Valid messages of every type."""
    return _ANY
