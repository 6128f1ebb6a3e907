"""edif-agent's exit codes (scripts, the systemd unit and the lab rely on them) and the errors carrying them.

The numbers are the table every tool shares (`edifd.edges.command_line`, printed in each --help):

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

from edifd.edges.command_line import EXIT_CONFIG, EXIT_IO, EXIT_KEY, EXIT_NOT_ESTABLISHED, EXIT_OK
from edifd.edges.command_line import EXIT_FAILURE as EXIT_PING_PROBLEMS
from edifd.edges.command_line import EXIT_UNAVAILABLE as EXIT_NO_DISK

__all__ = ["EXIT_CONFIG", "EXIT_IO", "EXIT_KEY", "EXIT_NOT_ESTABLISHED", "EXIT_NO_DISK", "EXIT_OK",
           "EXIT_PING_PROBLEMS", "AgentExit", "AgentUsageError"]


class AgentExit(Exception):
    """End the command with this exit code and message; `problems` (with their `source` file) are listed
    one per line under it, as every tool lists the problems of a file."""

    def __init__(self, code: int, message: str, *, problems: tuple[str, ...] = (), source: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.problems = problems
        self.source = source


class AgentUsageError(Exception):
    """The options do not make a runnable command (exit 2, with click's usage text)."""
