"""edifctl: the operator's view of a running edifd (entry point; the command group moves here)."""

from edifd.cli import edifctl_main as main

__all__ = ["main"]
