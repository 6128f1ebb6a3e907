"""What the EDIF engine keeps: the state of the current login of its remote port (its generation,
whether it is secure, its AUTH state), the ELS_SENDs waiting for a reply, and its counters. The
login's SAs are the HBA's (`edifd.hba.security.SecurityControl`)."""

from __future__ import annotations

from dataclasses import dataclass

from edifd.channel.handler import Deferred
from edifd.proto import AuthState, PortRef


@dataclass
class ElsOut:
    """An ELS_SEND waiting for the peer's LS_ACC/LS_RJT (or its deadline)."""

    deferred: Deferred
    port: PortRef
    deadline: float


@dataclass
class EngineCounters:
    """What the engine did, for status output (no key material)."""

    requests: int = 0
    refused: int = 0  # requests answered with anything but OK / a body
    els_sent: int = 0
    els_received: int = 0
    els_timeouts: int = 0
    sa_updates: int = 0
    auth_ok: int = 0
    auth_retry_later: int = 0
    auth_fail: int = 0
    shutdowns: int = 0
    shutdowns_acked: int = 0
    shutdowns_unacked: int = 0  # not acked within SHUTDOWN_ACK_TIMEOUT (teardown went on anyway)
    teardowns: int = 0  # sessions the ESP stage asked to tear down (ICV failures, no TX SA)
    app_stops: int = 0
    agent_lost: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Login:
    """The state of the current login of the remote port (a new PLOGI makes a new one)."""

    generation: int
    secure: bool
    auth: AuthState = AuthState.NOT_SECURE
    started: float = 0.0  # the port clock at the PLOGI: secure-session setup latency runs from here
