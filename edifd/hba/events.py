"""What an `InitiatorSession` reports (`take_events()`): its login state and why it changed,
completed commands, link resets it asks for, and the EDIF login and AUTH_ELS relay events.

A state change carries a `StateReason` (an enum, so its readers branch on it, never on text) and
a free `detail` for the log (the peer's reply, the requester's words).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edifd.fc import Frame
from edifd.scsi import ScsiResponse

from .transform import PeerInfo


class SessionState(enum.Enum):
    DOWN = "down"  # no link
    FLOGI = "flogi"  # FLOGI sent
    PLOGI = "plogi"  # PLOGI sent, or waiting for the peer's PLOGI
    AUTH_PENDING = "auth_pending"  # PLOGI done; the login policy holds PRLI back (EDIF: until AUTH_OK)
    PRLI = "prli"  # PRLI sent
    READY = "ready"  # FCP may flow
    GONE = "gone"  # the peer rejected a re-login, or the login is held


LOGGED_IN = frozenset({SessionState.AUTH_PENDING, SessionState.PRLI, SessionState.READY})


class StateReason(enum.Enum):
    """Why the session entered its new state."""

    LINK_UP = "link up"  # -> FLOGI
    LINK_DOWN = "link down"  # -> DOWN: the TCP connection is gone (or the port stopped)
    LOGOUT = "logout"  # -> DOWN: our own LOGO at shutdown
    PEER_ORIGINATES = "waiting for the peer's PLOGI"  # -> PLOGI: the peer has the higher Port_Name
    PLOGI = "PLOGI"  # -> PLOGI: ours, after FLOGI
    PEER_LOGO = "LOGO from the peer"  # -> PLOGI again
    PEER_PRLO = "PRLO from the peer"  # -> PLOGI again
    RSCN = "RSCN names it"  # -> PLOGI again: the peer may be gone
    RELOGIN = "re-login requested"  # -> PLOGI again (EDIF SECURE_CONNECT, ESP teardown)
    PLOGI_REJECTED = "PLOGI rejected"  # -> GONE: a re-login was refused
    PRLI_REFUSED = "PRLI refused"  # -> GONE
    HELD = "held"  # -> GONE: the login is held (EDIF AUTH_FAIL, APP_STOP, agent lost)
    AUTH_REQUIRED = "target requires authentication"  # -> AUTH_PENDING (LS_RJT 0x48 to PRLI)
    AUTH_WAIT = "waiting for authentication"  # -> AUTH_PENDING (our login policy)
    PRLI = "PRLI"  # -> PRLI
    PRLI_ACCEPTED = "PRLI accepted"  # -> READY


@dataclass(frozen=True)
class Completed:
    """A command finished (successfully or not); `tag` is the submitter's."""

    tag: int
    response: ScsiResponse


@dataclass(frozen=True)
class StateChanged:
    state: SessionState
    reason: StateReason
    detail: str = ""

    @property
    def text(self) -> str:
        return reason_text(self.reason, self.detail)


def reason_text(reason: StateReason, detail: str = "") -> str:
    """How a state change reads in the log."""
    return f"{reason.value}: {detail}" if detail else reason.value


@dataclass(frozen=True)
class ResetLink:
    """The edge must drop the TCP connection and reconnect (login timeout, lost ABTS)."""

    reason: str


@dataclass(frozen=True)
class ElsReceived:
    """An unsolicited ELS the session does not handle itself (AUTH_ELS for the EDIF relay)."""

    frame: Frame


@dataclass(frozen=True)
class LoggedIn:
    """A PLOGI (ours or the peer's) completed: a new login of the remote port begins (EDIF: new
    generation, new SAs). Comes before the StateChanged to PRLI or AUTH_PENDING."""

    peer: PeerInfo


@dataclass(frozen=True)
class ElsReplyReceived:
    """The LS_ACC / LS_RJT answering an ELS we originated with `send_els` (the AUTH_ELS relay)."""

    ox_id: int
    payload: bytes


Event = Completed | StateChanged | ResetLink | ElsReceived | ElsReplyReceived | LoggedIn
SessionEvent = Event
