"""edif-agent's exit codes (scripts, the systemd unit and the lab rely on them) and the errors carrying them.

  0  done, and for ping: every request answered once, in order
  1  ping finished but something was lost, duplicated or out of order
  2  usage error (click; `AgentUsageError` becomes one)
  3  no usable control disk (discovery, --port, --device)
  4  the channel key file was refused
  5  the channel did not come up (no handshake within --timeout, or the host refused us)
  6  I/O error on the control disk, or the state file
  7  the security configuration (run --config, check-config) was refused
"""

from __future__ import annotations

EXIT_OK, EXIT_PING_PROBLEMS, EXIT_NO_DISK, EXIT_KEY, EXIT_NOT_ESTABLISHED, EXIT_IO = 0, 1, 3, 4, 5, 6
EXIT_CONFIG = 7


class AgentExit(Exception):
    """End the command with this exit code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class AgentUsageError(Exception):
    """The options do not make a runnable command (exit 2, with click's usage text)."""
