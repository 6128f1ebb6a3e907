"""EDIF data protection, sans-IO: the per-session SA database (qla2xxx semantics) and the ESP
stage that protects FCP frames with AES-GCM or GMAC (FC-SP-2-shaped ESP_Header, DF_CTL 0x40).

    sadb = SaDatabase()
    esp = EspTransform(sadb)                      # the HBA session's frame-transform hook
    result = sadb.apply(sa_update_body, now)      # -> SaResult(status, detail, events)
    wire = esp.outbound(frame); clear = esp.inbound(received)   # None = dropped
    events = esp.tick(now)                        # delayed RX deletes, teardown requests

Layout and choices: docs/edif.md.
"""

from .counters import BlockReason, DropReason, EspCounters
from .errors import EdifError
from .esp import ESP_ICV_LEN, ESP_IV_LEN, ESP_OVERHEAD, aad_header, is_protected_traffic, iv_for
from .events import (
    DeleteCause,
    DeleteRx,
    Event,
    RekeyNeeded,
    SaUpdateDone,
    TeardownReason,
    TeardownRequested,
)
from .replay import DEFAULT_WINDOW, MAX_SEQ, ReplayVerdict, ReplayWindow
from .sa import SecurityAssociation, cipher_from_ike
from .sadb import RX_DELETE_AFTER_FRAMES, RX_DELETE_DELAY, SLOTS_PER_DIRECTION, SaDatabase, SaResult
from .transform import ICV_FAILURE_LIMIT, REKEY_MARGIN, EspTransform

__all__ = [
    "DEFAULT_WINDOW", "ESP_ICV_LEN", "ESP_IV_LEN", "ESP_OVERHEAD", "ICV_FAILURE_LIMIT", "MAX_SEQ",
    "REKEY_MARGIN", "RX_DELETE_AFTER_FRAMES", "RX_DELETE_DELAY", "SLOTS_PER_DIRECTION", "BlockReason",
    "DeleteCause", "DeleteRx", "DropReason", "EdifError", "EspCounters", "EspTransform", "Event",
    "RekeyNeeded", "ReplayVerdict", "ReplayWindow", "SaDatabase", "SaResult", "SaUpdateDone",
    "SecurityAssociation", "TeardownReason", "TeardownRequested", "aad_header", "cipher_from_ike",
    "is_protected_traffic", "iv_for",
]
