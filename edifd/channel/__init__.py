"""The emulated-device channel: the control LUN's delivery rules and authorization (docs/protocol.md 8).

`ChannelCore` is the host end (a `Medium` for the control LUN's ScsiDisk); `guest_agent.client`
is the agent end. Both compute the LBA layout from `ChannelGeometry`.
"""

from .core import COUNTERS, ChannelCore
from .handler import BasicHandler, Deferred, RequestHandler, StateProvider, StaticState
from .hoststate import HostState, HostStateError, StateFile
from .lba import LANES, ChannelGeometry, GeometryError
from .reject import Reject

__all__ = [
    "BasicHandler",
    "COUNTERS",
    "ChannelCore",
    "ChannelGeometry",
    "Deferred",
    "GeometryError",
    "HostState",
    "HostStateError",
    "LANES",
    "Reject",
    "RequestHandler",
    "StateFile",
    "StateProvider",
    "StaticState",
]
