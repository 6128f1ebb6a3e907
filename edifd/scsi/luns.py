"""REPORT LUNS (SPC-4 6.33) for the transports: LIO answers it on the TCMU path, the FCP target
answers it itself; both can use these helpers so the encoding lives in one place.

LUN encoding (SAM-5 4.7): 0..255 peripheral device addressing, 256..16383 flat space addressing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .command import ScsiCommand, ScsiResponse, Status
from .commands import lookup
from .sense import Asc, CheckCondition, SenseKey, invalid_field

MAX_LUN = 0x3FFF
SELECT_ALL_LOGICAL_UNITS = 0x00
SELECT_WELL_KNOWN = 0x01
SELECT_ALL = 0x02


def encode_lun(lun: int) -> bytes:
    """The 8-byte single-level LUN structure for `lun`."""
    if not isinstance(lun, int) or not 0 <= lun <= MAX_LUN:
        raise ValueError(f"LUN {lun!r} out of range 0..{MAX_LUN}")
    if lun < 256:
        return bytes([0x00, lun]) + bytes(6)
    return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)


def report_luns_data(luns: Iterable[int], alloc_len: int) -> bytes:
    """REPORT LUNS parameter data for `luns` (in the order given), truncated to alloc_len.

    Raises ValueError for a LUN out of range or a duplicate. Not padded: see `fit_data_in`.
    """
    seen: set[int] = set()
    body = bytearray()
    for lun in luns:
        if lun in seen:
            raise ValueError(f"duplicate LUN {lun}")
        seen.add(lun)
        body += encode_lun(lun)
    if alloc_len < 0:
        raise ValueError("alloc_len must be >= 0")
    return (struct.pack(">II", len(body), 0) + bytes(body))[:alloc_len]


def fit_data_in(data: bytes, data_in_len: int) -> bytes:
    """Exactly data_in_len bytes: truncated, or zero-filled so no stale buffer bytes reach the
    initiator (TCMU reuses data pages)."""
    n = max(data_in_len, 0)
    return bytes(data[:n]).ljust(n, b"\x00")


def report_luns_payload(cdb: bytes, luns: Iterable[int]) -> bytes:
    """Parameter data for a REPORT LUNS CDB, truncated to its allocation length (not padded).

    SELECT REPORT 00h and 02h list `luns`; 01h (well-known LUs only) lists none, as we have none.
    Raises CheckCondition for a bad CDB, ValueError for bad `luns`.
    """
    spec = lookup(cdb)
    if spec.opcode != 0xA0:
        raise CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    select = cdb[2]
    if select not in (SELECT_ALL_LOGICAL_UNITS, SELECT_WELL_KNOWN, SELECT_ALL):
        raise invalid_field(2)
    alloc = struct.unpack_from(">I", cdb, 6)[0]
    return report_luns_data([] if select == SELECT_WELL_KNOWN else luns, alloc)


def respond_report_luns(cmd: ScsiCommand, luns: Iterable[int]) -> ScsiResponse:
    """A complete REPORT LUNS response for a transport: checks the CDB, encodes, pads to
    cmd.data_in_len. A CDB error yields CHECK CONDITION with fixed sense, like ScsiDisk."""
    try:
        data = report_luns_payload(cmd.cdb, luns)
    except CheckCondition as e:
        return ScsiResponse(Status.CHECK_CONDITION, fit_data_in(b"", cmd.data_in_len), e.sense, data_len=0)
    out = fit_data_in(data, cmd.data_in_len)
    return ScsiResponse(Status.GOOD, out, data_len=min(len(data), len(out)))
