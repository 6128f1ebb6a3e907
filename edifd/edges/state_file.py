"""The file that keeps a control LUN's `HostState` across an edifd restart (one per LUN in
daemon.state_dir); the record itself is `edifd.channel.hoststate`."""

from __future__ import annotations

import os

from edifd.channel.hoststate import RECORD_SIZE, HostState, HostStateError


class StateFile:
    """One small file holding the latest HostState record.

    Each save is a single pwrite of the whole record at offset 0 (no fsync): against a dying
    process a one-page pwrite is all-or-nothing, and a host crash takes the guest with it. The CRC
    catches anything torn anyway, which then reads as "no state" -- the safe fresh start.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def load(self) -> HostState | None:
        data = os.pread(self._fd, RECORD_SIZE, 0)
        if not data:
            return None
        try:
            return HostState.unpack(data)
        except HostStateError:
            return None

    def save(self, state: HostState) -> None:
        os.pwrite(self._fd, state.pack(), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
