"""The emulated-device channel: the control LUN's delivery rules and authorization (docs/protocol.md 8).

`ChannelCore` is the host end (a `Medium` for the control LUN's ScsiDisk); `guest_agent.client`
is the agent end. Both compute the LBA layout from `ChannelGeometry`.
"""

from edifd.proto.lba import LANES, ChannelGeometry, GeometryError
from edifd.proto.reject import Reject

from .core import COUNTERS, ChannelCore
from .handler import BasicHandler, Deferred, RequestHandler, StateProvider, StaticState
from .hoststate import HostState, HostStateError

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
    "StateProvider",
    "StaticState",
]
