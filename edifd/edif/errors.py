"""The one exception type of `edifd.edif`.

The per-frame paths never raise (the HBA's transform hook must not): they drop and count.
SA database operations return an `SaResult` with a channel status instead of raising, because a
refused SA_UPDATE is an answer to the agent, not a bug. `EdifError` is left for invalid
configuration and API misuse. Its messages never contain key or salt bytes.
"""

from __future__ import annotations


class EdifError(ValueError):
    """Invalid configuration or misuse of the edif API (never raised for bad received frames)."""
