"""MODE SENSE(6)/(10) parameter data (SPC-4 6.11/6.12, 7.5; SBC-3 6.4).

Pages: 0x08 Caching, 0x0A Control, 0x3F all (ascending page order). No MODE SELECT, so every
"changeable" mask is zero and default = current. Saved values are not supported (05/39/00).
A block descriptor is returned unless DBD=1 (short 8-byte form; long 16-byte form with LLBAA in
MODE SENSE(10)).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .sense import Asc, CheckCondition, SenseKey, invalid_field

PAGE_CACHING = 0x08
PAGE_CONTROL = 0x0A
PAGE_ALL = 0x3F
SUBPAGE_ALL = 0xFF

PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = range(4)

_DSP_WP = 0x80
_DSP_DPOFUA = 0x10  # we honour DPO/FUA in READ/WRITE/VERIFY (libiscsi DpoFua tests key off this)


@dataclass(frozen=True)
class ModeState:
    """What the pages describe; the disk builds it from its medium and configuration."""

    num_blocks: int
    block_size: int
    write_cache: bool
    read_only: bool


def _caching(st: ModeState, changeable: bool) -> bytes:
    page = bytearray(20)
    page[0], page[1] = PAGE_CACHING, 18
    if not changeable and st.write_cache:
        page[2] = 0x04  # WCE: writes may sit in a volatile cache until SYNCHRONIZE CACHE or FUA
    return bytes(page)  # RCD=0: reads are served from the medium


def _control(changeable: bool) -> bytes:
    page = bytearray(12)
    page[0], page[1] = PAGE_CONTROL, 10
    if not changeable:
        page[2] = 0x02  # GLTSD: no log pages to save; TST=0, D_SENSE=0 (fixed format only)
        page[3] = 0x10  # QUEUE ALGORITHM MODIFIER 1: completions may be reordered (deferred media)
        page[5] = 0x40  # TAS: aborted tasks get TASK ABORTED status (LIO's default)
        struct.pack_into(">H", page, 8, 0xFFFF)  # BUSY TIMEOUT PERIOD: unlimited
    return bytes(page)


def _block_descriptor(st: ModeState, long_lba: bool) -> bytes:
    if long_lba:
        return struct.pack(">QII", st.num_blocks, 0, st.block_size)
    # Short form (SBC-3 6.4.2): a count that does not fit is reported as 0xFFFFFFFF.
    return struct.pack(">II", min(st.num_blocks, 0xFFFFFFFF), st.block_size & 0xFFFFFF)


def mode_sense(cdb: bytes, st: ModeState, *, ten: bool) -> bytes:
    """Whole mode parameter data for a checked MODE SENSE(6) (ten=False) or (10) CDB."""
    dbd = bool(cdb[1] & 0x08)
    llbaa = ten and bool(cdb[1] & 0x10)
    pc = cdb[2] >> 6
    page_code = cdb[2] & 0x3F
    subpage = cdb[3]
    if pc == PC_SAVED:
        raise CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED)
    changeable = pc == PC_CHANGEABLE
    if page_code == PAGE_ALL:
        if subpage not in (0x00, SUBPAGE_ALL):
            raise invalid_field(3)
        pages = _caching(st, changeable) + _control(changeable)
    elif page_code in (PAGE_CACHING, PAGE_CONTROL):
        if subpage not in (0x00, SUBPAGE_ALL):
            raise invalid_field(3)
        pages = _caching(st, changeable) if page_code == PAGE_CACHING else _control(changeable)
    else:
        raise invalid_field(2, 5)
    bd = b"" if dbd else _block_descriptor(st, llbaa)
    dsp = (_DSP_WP if st.read_only else 0) | _DSP_DPOFUA
    if ten:
        body = struct.pack(">BBBBH", 0, dsp, 0x01 if bd and llbaa else 0, 0, len(bd)) + bd + pages
        return struct.pack(">H", len(body)) + body  # MODE DATA LENGTH excludes itself
    body = struct.pack(">BBB", 0, dsp, len(bd)) + bd + pages
    return struct.pack(">B", len(body)) + body
