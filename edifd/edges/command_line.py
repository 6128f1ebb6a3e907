"""What the four tools (edifd, edifctl, edif-agent, edif-target) share on the command line: one exit-code
table, `--version` and `-h`, and one way to print the problems of a file.

Exit codes (every tool; a code a tool cannot hit is simply never returned by it):

  0  done
  1  a run-time failure: edifd could not start or stopped on an error, edif-target could not serve,
     edifctl found a stale status (edifd may have died) or a command edifd refused,
     edif-agent ping lost, duplicated or reordered something
  2  usage error (click: unknown option, bad option value, missing argument)
  3  nothing to talk to: edif-agent found no usable control disk; edifctl found neither a running
     edifd nor a status file
  4  a channel key file was refused (edif-agent ping, run, status --probe)
  5  the channel did not come up (edif-agent: no handshake within --timeout, or the host refused it)
  6  I/O error: the agent's control disk or state file; edifctl reading a status file or writing a key
  7  a configuration or input file was refused (every check-config and run; edifctl's status file,
     gen-key's existing file): every problem is listed, as FILE:KEY: message

2 is click's and stays click's: an invalid configuration is 7, never 2, so a script can tell a typo
on the command line from a typo in the file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

from .logs import under_journal

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # click's own
EXIT_UNAVAILABLE = 3
EXIT_KEY = 4
EXIT_NOT_ESTABLISHED = 5
EXIT_IO = 6
EXIT_CONFIG = 7

DISTRIBUTION = "edif"  # pyproject's [project] name: its version is every tool's --version

EXIT_CODES_HELP = """\b
Exit codes (the same for edifd, edifctl, edif-agent and edif-target):
  0  done
  1  run-time failure (start failed, stale status, edifd refused the command, ping lost)
  2  usage error (unknown option, bad option value)
  3  nothing to talk to (edif-agent: no control disk; edifctl: no edifd, no status file)
  4  channel key file refused (edif-agent)
  5  channel not established (edif-agent)
  6  I/O error (control disk, state file, status file, key file)
  7  configuration or input file refused (every problem listed as FILE:KEY: message)"""

# -h as well as --help, on every command of every tool (subcommands inherit it), and room for the
# option help texts.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or a sentence when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def version_option(prog: str) -> Callable[[Any], Any]:
    """`--version`: `PROG VERSION`, from the package metadata."""
    return click.version_option(package_version(), "--version", prog_name=prog,
                                message="%(prog)s %(version)s")


# A problem starts with its key path when the text before the first ": " has no space in it
# (`lun[1].size`, `targets."21:00:00:1b:32:00:00:02".psk_file`); "cannot read: ..." names no key.
_KEYED = re.compile(r"^[^\s]+?: ")


def located(source: str, problem: str) -> str:
    """`FILE:KEY: message` for a problem that names its key, else `FILE: message`."""
    return f"{source}:{problem}" if _KEYED.match(problem) else f"{source}: {problem}"


def problem_lines(source: str, problems: Iterable[str]) -> list[str]:
    """The bulleted lines of every problem of `source`, each `  - FILE:KEY: message`."""
    return [f"  - {located(source, p)}" for p in problems]


def _stderr(line: str, priority: int) -> None:
    """A line on stderr; under systemd with its syslog priority (`edifd.edges.logs`), so that
    `journalctl -p err` shows a refused configuration too."""
    prefix = f"<{priority}>" if under_journal(sys.stderr) else ""
    click.echo(prefix + line, err=True)


def echo_error(tool: str, message: str) -> None:
    """`TOOL: message` on stderr (priority err under systemd)."""
    _stderr(f"{tool}: {message}", 3)


def echo_problems(tool: str, source: str, problems: Iterable[str], *,
                  what: str = "configuration refused") -> None:
    """`TOOL: WHAT (N problems):` then one bulleted line per problem, on stderr."""
    lines = problem_lines(source, problems)
    _stderr(f"{tool}: {what} ({len(lines)} problem{'s' if len(lines) != 1 else ''}):", 3)
    for line in lines:
        _stderr(line, 3)


def echo_warnings(tool: str, source: str, warnings: Iterable[str]) -> None:
    """One `TOOL: warning: FILE:KEY: message` line per warning, on stderr."""
    for w in warnings:
        _stderr(f"{tool}: warning: {located(source, w)}", 4)
