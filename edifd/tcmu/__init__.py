"""The kernel edge: a pure-Python TCMU handler (ring, dispatcher, UIO device) and LIO configuration.

rtslib-fb is imported lazily by `edifd.tcmu.lio`, so importing this package needs neither it
nor a kernel.
"""

from edifd.tcmu.errors import DeviceError, LioError, RingError, TcmuError

__all__ = ["DeviceError", "LioError", "RingError", "TcmuError"]
