"""systemd's notify protocol without libsystemd: one datagram to $NOTIFY_SOCKET.

Used by `edifd` (READY/WATCHDOG/STOPPING) and by `edif-agent run` (READY/STOPPING), both Type=notify
units. Best effort: outside systemd it does nothing, and a socket that is gone or refuses the datagram
is ignored (the unit's start timeout or watchdog catches a silent service).
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> None:
    """Send `state` (e.g. "READY=1") to the socket systemd named in $NOTIFY_SOCKET, if any."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), addr)
    except OSError:
        pass
