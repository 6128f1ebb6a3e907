"""The application's record of one configured target, and what its parts need from the application.

`TargetSession` is plain data that discovery, the IKE driver and the SA installer each move along;
`AppContext` is the little of `SecurityApp` they call back into (clock, output, failure handling).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edifd.fc import wwn_str
from edifd.ike import Initiator
from edifd.proto import AuthFailReason, Body, Cipher, PortRef

from .config import PeerPolicy, SecConfig
from .events import AppEvent

if TYPE_CHECKING:  # the installer's types; it imports this module
    from .installer import RxDeletePending, Step, Wait


class SessionState(enum.Enum):
    IDLE = "idle"  # nothing running; waiting for the target (PORT_ONLINE / GET_TARGETS) or a reconnect
    CONNECTING = "connecting"  # SECURE_CONNECT sent, waiting for AUTH_NEEDED
    NEGOTIATING = "negotiating"  # IKE_SA_INIT / IKE_AUTH in flight
    INSTALLING = "installing"  # child SA negotiated; SA_UPDATEs and AUTH_OK in progress
    SECURE = "secure"
    FAILED = "failed"  # AUTH_FAIL sent; retried after a backoff


@dataclass
class KeyPair:
    """The SPIs of one negotiated child SA (no keys: those only travel in SA_UPDATE bodies)."""

    spi_in: int
    spi_out: int
    cipher: Cipher
    since: float = 0.0  # when it became the pair in use (lifetime rekey)
    base: tuple[int, int] = (0, 0)  # tx/rx byte counters when it became current (volume rekey)


@dataclass
class TargetSession:
    """The application's view of one configured target."""

    wwpn: int
    policy: PeerPolicy
    state: SessionState = SessionState.IDLE
    port: PortRef | None = None
    ike: Initiator | None = field(default=None, repr=False)
    tid: int = 0
    current: KeyPair | None = None
    incoming: KeyPair | None = None  # negotiated, being installed
    trigger: str = ""  # why `incoming` exists
    steps: deque[Step] = field(default_factory=deque, repr=False)
    waiting: Wait | None = None  # what the head step waits for
    retry_at: float | None = None  # IDLE/FAILED: when to SECURE_CONNECT again; else when to `resend`
    resend: Body | None = None  # an AUTH_OK / SA_UPDATE the host answered RETRY_LATER
    failures: int = 0
    deferred_needed: PortRef | None = None  # AUTH_NEEDED that arrived during the failure backoff
    retx_data: bytes | None = field(default=None, repr=False)
    retx_at: float = 0.0
    retx_count: int = 0
    rekey_blocked_until: float = 0.0
    rx_delete_pending: RxDeletePending | None = None  # an old RX SA still in the HBA
    counters: tuple[int, int] = (0, 0)  # last tx/rx seen in STATS

    def __repr__(self) -> str:
        return f"TargetSession({wwn_str(self.wwpn)}, {self.state.value})"

    def forget(self) -> SessionState:
        """Drop the IKE and SA state (the host has dropped, or will drop, its SAs); returns the old state.
        `port`, `failures` and `counters` stay."""
        was = self.state
        self.ike = None
        self.current = self.incoming = None
        self.steps.clear()
        self.waiting = None
        self.retx_data = None
        self.deferred_needed = None
        self.state = SessionState.IDLE
        self.retry_at = None
        self.resend = None
        self.rx_delete_pending = None
        self.rekey_blocked_until = 0.0
        return was


class AppContext(Protocol):
    """What discovery, the IKE driver and the SA installer need from the application."""

    config: SecConfig

    def now(self) -> float: ...

    def emit(self, item: Body | AppEvent) -> None: ...

    def drop(self, s: TargetSession, detail: str, *, quiet: bool = False) -> None: ...

    def fail(
        self, s: TargetSession, reason: AuthFailReason, detail: str, *, backoff: bool = True
    ) -> None: ...
