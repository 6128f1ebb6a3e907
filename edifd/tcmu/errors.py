"""Errors raised by the TCMU edge.

Every parser and configurator in `edifd.tcmu` raises only these (plus ValueError for plain
argument mistakes by the caller), so the daemon can tell a broken ring from a missing module.
"""

from __future__ import annotations


class TcmuError(Exception):
    """Base class of all errors raised by edifd.tcmu."""


class RingError(TcmuError):
    """The shared ring holds something the kernel never writes (or we were asked to do
    something the ring protocol forbids). Nothing was changed; recover with `reset_ring`."""


class DeviceError(TcmuError):
    """The UIO device or its configfs directory is missing, busy or unusable."""


class LioError(TcmuError):
    """LIO configuration failed; the message names what to mount, load or install."""
