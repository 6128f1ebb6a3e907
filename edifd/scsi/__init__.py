"""SCSI direct-access disk emulation, sans-IO: CDB in, (status, data, sense) out.

Transports (the TCMU ring, the FCP target) hand `ScsiCommand`s to `ScsiDisk.execute()` and get a
`ScsiResponse` or a `Pending`. The blocks live behind a pluggable `Medium` (a file one is
`edifd.edges.file_medium.FileMedium`). See docs/scsi.md.
"""

from .command import Pending, ScsiCommand, ScsiResponse, Status
from .commands import Opcode, ServiceAction
from .disk import ScsiDisk
from .identity import Identity, derive_naa6
from .luns import encode_lun, fit_data_in, report_luns_data, report_luns_payload, respond_report_luns
from .medium import BLOCK_SIZES, IoKind, IoRequest, Medium, MemoryMedium
from .sense import Asc, CheckCondition, MediumError, SenseData, SenseKey, SenseParseError, sense

__all__ = [
    "BLOCK_SIZES",
    "Asc",
    "CheckCondition",
    "Identity",
    "IoKind",
    "IoRequest",
    "Medium",
    "MediumError",
    "MemoryMedium",
    "Opcode",
    "Pending",
    "ScsiCommand",
    "ScsiDisk",
    "ScsiResponse",
    "SenseData",
    "SenseKey",
    "SenseParseError",
    "ServiceAction",
    "Status",
    "derive_naa6",
    "encode_lun",
    "fit_data_in",
    "report_luns_data",
    "report_luns_payload",
    "respond_report_luns",
    "sense",
]
