"""What the channel dispatches requests to, and where the "full current state" comes from.

The channel answers APP_START, APP_STOP, KEEPALIVE, RESYNC and EVENT_ACK itself; every other
authorized request goes to a `RequestHandler` (the HBA model implements it, issue 6). A handler
answers at once with a response body, or returns a `Deferred` it resolves later from any thread.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edifd.proto import MAX_TARGET_ENTRIES as _MAX_TARGETS
from edifd.proto import (
    Body,
    GetPortInfo,
    GetStats,
    GetTargets,
    LinkDown,
    LinkState,
    LinkUp,
    Message,
    PortInfo,
    Response,
    Stats,
    Status,
    TargetEntry,
    TargetList,
)


class Deferred:
    """A response that comes later. `resolve(body)` exactly once, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: Body | None = None
        self._sink: Callable[[Body], None] | None = None

    def resolve(self, body: Body) -> None:
        with self._lock:
            if self._body is not None:
                raise RuntimeError("Deferred resolved twice")
            self._body = body
            sink = self._sink
        if sink is not None:
            sink(body)

    def bind(self, sink: Callable[[Body], None]) -> None:
        """Called by the channel once: where the body goes (at once if already resolved)."""
        with self._lock:
            self._sink = sink
            body = self._body
        if body is not None:
            sink(body)


class RequestHandler(ABC):
    """Base of what the channel dispatches to: `handle` answers a request; the hooks hear of the
    requests the channel answers itself (OK, or FAILED if the hook raises) and of a silent agent.
    All run outside the channel lock, on the thread of the WRITE or tick, so they should not block;
    the hooks' defaults do nothing."""

    @abstractmethod
    def handle(self, msg: Message) -> Body | Deferred:
        """Act on one authorized request (called once per request, outside the channel lock)."""

    def keepalive(self, msg: Message) -> None:
        """A KEEPALIVE arrived."""
        return None

    def event_acked(self, msg: Message) -> None:
        """An EVENT_ACK arrived."""
        return None

    def app_stopped(self, msg: Message) -> None:
        """An APP_STOP arrived."""
        return None

    def agent_silent(self) -> None:
        """The agent missed three of the KEEPALIVEs it promised (reported once per silence): the
        EDIF VM is gone or hung. The epoch stays valid for a late agent."""
        return None


class StateProvider(Protocol):
    """The port's current state: what RESYNC re-announces and GET_PORT_INFO/GET_TARGETS report."""

    def port_info(self) -> PortInfo: ...

    def targets(self) -> list[TargetEntry]: ...


@dataclass
class StaticState:
    """A StateProvider for a port with no HBA behind it yet: fixed port info, no targets."""

    wwpn: int
    wwnn: int = 0
    link: LinkState = LinkState.DOWN
    entries: list[TargetEntry] = field(default_factory=list)

    def port_info(self) -> PortInfo:
        return PortInfo(self.wwpn, self.wwnn, link=self.link, remote_ports=len(self.entries))

    def targets(self) -> list[TargetEntry]:
        return list(self.entries)


def state_events(state: StateProvider) -> list[Body]:
    """The events that re-announce the current state after RESYNC (the agent then pages
    GET_TARGETS for the remote ports): today the link state."""
    return [LinkUp() if state.port_info().link == LinkState.UP else LinkDown()]


class BasicHandler(RequestHandler):
    """Answers GET_PORT_INFO, GET_TARGETS (paged) and GET_STATS (empty) from a StateProvider; every
    HBA request gets RESPONSE(UNSUPPORTED) until the HBA model exists."""

    def __init__(self, state: StateProvider) -> None:
        self.state = state

    def handle(self, msg: Message) -> Body | Deferred:
        body = msg.body
        if isinstance(body, GetPortInfo):
            return self.state.port_info()
        if isinstance(body, GetTargets):
            rows = [t for t in self.state.targets() if body.wwpn in (0, t.port.wwpn)]
            start = min(body.start, len(rows))
            page = rows[start : start + min(body.max_entries, _MAX_TARGETS)]
            return TargetList(len(rows), start, tuple(page))
        if isinstance(body, GetStats):
            return Stats(0, 0, ())
        return Response(msg.type, Status.UNSUPPORTED)
