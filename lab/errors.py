"""Exceptions of the lab package."""


class LabError(Exception):
    """A lab step failed (build, boot, guest script); the message carries the output tail."""


class LabTimeout(LabError):
    """A wait on a guest (marker, file, exit) ran out of time; the message carries the serial console tail."""
