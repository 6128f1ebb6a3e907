"""What the SA database and the ESP stage tell the HBA. Plain frozen dataclasses, no key material.

`SaUpdateDone` is forwarded to the agent as SA_UPDATE_COMPL (`to_proto(port)`); the others are
for the HBA itself: `DeleteRx` reports that a delayed RX delete finally took effect,
`TeardownRequested` asks it to tear the session down, `RekeyNeeded` that the TX sequence
number space is nearly used up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edifd.proto import PortRef, SaDirection, SaFlags, SaStatus, SaUpdateCompl


class DeleteCause(enum.Enum):
    """Why an RX SA was deleted."""

    REQUESTED = "requested"  # immediate delete (no other RX SA, or FORCE_DELETE)
    NEW_SA_IN_USE = "new_sa_in_use"  # N frames arrived on the new RX SA (qla2xxx: 3)
    TIMEOUT = "timeout"  # the delay ran out (qla2xxx RX_DELAY_DELETE_TIMEOUT: 20 s)
    SESSION_CLEARED = "session_cleared"  # all SAs dropped at session teardown


class TeardownReason(enum.Enum):
    ICV_FAILURES = "icv_failures"  # consecutive ICV failures reached the limit
    NO_TX_SA = "no_tx_sa"  # an FCP frame had to go out and there is no TX SA
    SEQ_EXHAUSTED = "seq_exhausted"  # the TX SA used sequence number 2^32-1; no rekey came


@dataclass(frozen=True)
class SaUpdateDone:
    """An SA_UPDATE (or a delayed RX delete) took effect: SA_UPDATE_COMPL's content minus the port.

    flags repeats the request's flags (DELETE tells a delete from an add of the same SPI).
    """

    direction: SaDirection
    spi: int
    status: SaStatus = SaStatus.SUCCESS
    flags: SaFlags = SaFlags(0)
    fw_status: int = 0

    def to_proto(self, port: PortRef) -> SaUpdateCompl:
        return SaUpdateCompl(port, self.spi, self.direction, self.status, self.fw_status, self.flags)


@dataclass(frozen=True)
class DeleteRx:
    """The RX SA `spi` is gone: inbound frames with this SPI are now dropped as unknown."""

    spi: int
    cause: DeleteCause


@dataclass(frozen=True)
class TeardownRequested:
    reason: TeardownReason
    detail: str = ""


@dataclass(frozen=True)
class RekeyNeeded:
    """The TX SA `spi` passed its soft sequence limit; the agent should rekey (raised once per SA)."""

    spi: int
    seq: int


Event = SaUpdateDone | DeleteRx | TeardownRequested | RekeyNeeded
