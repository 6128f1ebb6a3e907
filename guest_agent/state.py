"""The agent's state file: the channel client's snapshot, kept across agent restarts.

Written atomically (temporary file + rename in the same directory) with mode 0600, so a crash leaves
either the old or the new state and no other user can read it. A SIGKILLed agent loses nothing that
was written, as the page cache survives the process; ``fsync`` would only matter for a guest crash,
after which the host re-handshakes anyway, so it is left out of the per-message path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_VERSION = 1
MAX_STATE = 1 << 20  # a snapshot is small; refuse to load anything absurd


class StateFileError(Exception):
    """The state file cannot be read or is not a state file."""


class StateFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> bytes | None:
        """The saved bytes, or None when there is no state yet."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_STATE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateFileError(f"cannot read agent state {self.path}: {e.strerror}") from None
        if len(data) > MAX_STATE:
            raise StateFileError(f"agent state {self.path} is larger than {MAX_STATE} bytes")
        return data

    def save(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def encode_state(client: bytes, app: dict[str, Any] | None = None) -> bytes:
    """One file for the client snapshot and the application's own record, saved together so that
    they always agree (see guest_agent.disk, "Restart safety")."""
    return json.dumps({"version": STATE_VERSION, "client": client.hex(), "app": app or {}},
                      sort_keys=True).encode()


def decode_state(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """(client snapshot, application record); StateFileError if this is not our state file."""
    try:
        d = json.loads(data)
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError("unknown version")
        client, app = bytes.fromhex(d["client"]), d["app"]
        if not isinstance(app, dict):
            raise ValueError("app record is not an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise StateFileError(f"not an edif-agent state file: {e}") from None
    return client, app
