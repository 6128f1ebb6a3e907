"""The message catalogue: type codes, who sends each type, and which types answer which.

Code ranges make the direction visible in a hex dump: 0x01-0x3E downstream requests
(agent -> host, in WRITEs) and 0x3F the downstream acknowledgement, 0x40-0x7F upstream responses,
0x80-0xBF upstream events, 0xF0 the upstream heartbeat. 0x00 is never used, so a zeroed buffer
can never be a message.
"""

from __future__ import annotations

import enum


class Direction(enum.Enum):
    """Which way a message travels on the control LUN."""

    DOWNSTREAM = "downstream"  # agent -> host, the payload of a WRITE
    UPSTREAM = "upstream"  # host -> agent, the data of a parked READ


class Kind(enum.Enum):
    """The role of a message in the exchange."""

    REQUEST = "request"  # downstream; answered by exactly one response with the same request id
    RESPONSE = "response"  # upstream; echoes the request id of the request it answers
    EVENT = "event"  # upstream, unsolicited; request id 0
    HEARTBEAT = "heartbeat"  # upstream "nothing" that completes an idle parked READ; request id 0
    ACKNOWLEDGEMENT = "acknowledgement"  # downstream, sealed, answered by nothing: carries only its ack


class MessageType(enum.IntEnum):
    """Header byte 5. Values are wire values: never renumber, only add (with a version bump)."""

    # Downstream requests (agent -> host).
    APP_START = 0x01
    APP_STOP = 0x02
    GET_PORT_INFO = 0x03
    GET_TARGETS = 0x04
    SECURE_CONNECT = 0x05
    ELS_SEND = 0x06
    ELS_REPLY = 0x07
    SA_UPDATE = 0x08
    AUTH_OK = 0x09
    AUTH_FAIL = 0x0A
    EVENT_ACK = 0x0B
    GET_STATS = 0x0C
    KEEPALIVE = 0x0D
    RESYNC = 0x0E

    # Downstream acknowledgement (agent -> host): "consumed up to" and nothing else.
    ACK = 0x3F

    # Upstream responses (host -> agent), matched by request id.
    RESPONSE = 0x40
    APP_START_CHALLENGE = 0x41
    APP_START_ANSWER = 0x42
    PORT_INFO = 0x43
    TARGET_LIST = 0x44
    STATS = 0x45
    ELS_RESPONSE = 0x46

    # Upstream events (host -> agent), unsolicited.
    AUTH_NEEDED = 0x80
    ELS_RCVD = 0x81
    SA_UPDATE_COMPL = 0x82
    SESSION_SHUTDOWN = 0x83
    LINK_UP = 0x84
    LINK_DOWN = 0x85
    PORT_ONLINE = 0x86
    PORT_OFFLINE = 0x87
    TARGET_GONE = 0x88
    HOST_RESET = 0x89
    EVENT_OVERFLOW = 0x8A

    # Upstream "nothing": completes a parked READ when no message is pending.
    HEARTBEAT = 0xF0

    @property
    def kind(self) -> Kind:
        return _KIND[self]  # from the code range (_kind_of); a table: several lookups per message

    @property
    def direction(self) -> Direction:
        return _DIRECTION[self]

    @property
    def needs_ack(self) -> bool:
        """True for events the agent must acknowledge with EVENT_ACK (the host waits, bounded)."""
        return self in _NEEDS_ACK

    @property
    def responses(self) -> frozenset[MessageType]:
        """For a request: the response types that may answer it (RESPONSE always can, for errors)."""
        return _RESPONSES.get(self, frozenset())


def _kind_of(code: int) -> Kind:
    if code == 0x3F:
        return Kind.ACKNOWLEDGEMENT
    if code < 0x40:
        return Kind.REQUEST
    if code < 0x80:
        return Kind.RESPONSE
    if code < 0xC0:
        return Kind.EVENT
    return Kind.HEARTBEAT


_KIND = {t: _kind_of(t._value_) for t in MessageType}
_DIRECTION = {t: Direction.DOWNSTREAM if t._value_ < 0x40 else Direction.UPSTREAM for t in MessageType}

# qla2xxx waits for the app's ack only on session shutdown (its AEN_COMPLETE); so do we.
_NEEDS_ACK = frozenset({MessageType.SESSION_SHUTDOWN})

_R = MessageType
_RESPONSES: dict[MessageType, frozenset[MessageType]] = {
    t: frozenset({_R.RESPONSE}) for t in MessageType if t.kind is Kind.REQUEST
}
_RESPONSES[_R.APP_START] = frozenset({_R.RESPONSE, _R.APP_START_CHALLENGE, _R.APP_START_ANSWER})
_RESPONSES[_R.GET_PORT_INFO] = frozenset({_R.RESPONSE, _R.PORT_INFO})
_RESPONSES[_R.GET_TARGETS] = frozenset({_R.RESPONSE, _R.TARGET_LIST})
_RESPONSES[_R.GET_STATS] = frozenset({_R.RESPONSE, _R.STATS})
_RESPONSES[_R.ELS_SEND] = frozenset({_R.RESPONSE, _R.ELS_RESPONSE})
del _R
