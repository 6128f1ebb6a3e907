"""INQUIRY data: the standard page (SPC-4 6.6.2) and the VPD pages we support (SPC-4 7.8, SBC-3 6.5).

Pages are built whole; the caller truncates to the allocation length and pads to the buffer.
"""

from __future__ import annotations

import struct

from .identity import Identity
from .sense import invalid_field

PDT_DIRECT_ACCESS = 0x00
STANDARD_INQUIRY_LEN = 96

# Version descriptors (SPC-4 table 144): SAM-5, SPC-4, SBC-3. Claiming SBC-3 obliges the 0x3C-byte
# Block Limits page (libiscsi checks this) and READ CAPACITY(16).
VERSION_DESCRIPTORS = (0x00A0, 0x0460, 0x04C0)

VPD_SUPPORTED_PAGES = 0x00
VPD_UNIT_SERIAL = 0x80
VPD_DEVICE_ID = 0x83
VPD_BLOCK_LIMITS = 0xB0
VPD_BLOCK_DEVICE_CHARACTERISTICS = 0xB1
VPD_LOGICAL_BLOCK_PROVISIONING = 0xB2
SUPPORTED_VPD = (
    VPD_SUPPORTED_PAGES,
    VPD_UNIT_SERIAL,
    VPD_DEVICE_ID,
    VPD_BLOCK_LIMITS,
    VPD_BLOCK_DEVICE_CHARACTERISTICS,
    VPD_LOGICAL_BLOCK_PROVISIONING,
)

# Designation descriptor fields (SPC-4 7.8.6.1).
_CODE_SET_BINARY = 1
_CODE_SET_ASCII = 2
_ASSOC_LU = 0
_ASSOC_TARGET_PORT = 1
_TYPE_T10_VENDOR = 1
_TYPE_NAA = 3
_TYPE_RELATIVE_TARGET_PORT = 4
_PIV = 0x80
_PROTO_FC = 0x0  # FCP-4


def standard_inquiry(ident: Identity) -> bytes:
    buf = bytearray(STANDARD_INQUIRY_LEN)
    buf[0] = PDT_DIRECT_ACCESS  # peripheral qualifier 0: LU connected
    buf[2] = 0x06  # VERSION: SPC-4
    buf[3] = 0x10 | 0x02  # HISUP, RESPONSE DATA FORMAT 2
    buf[4] = STANDARD_INQUIRY_LEN - 5
    # byte 5: no 3PC, no TPGS (no ALUA), PROTECT=0 (no T10 PI: RD/WR/VRPROTECT must be zero)
    buf[7] = 0x02  # CMDQUE
    buf[8:16] = Identity.field(ident.vendor, 8)
    buf[16:32] = Identity.field(ident.product, 16)
    buf[32:36] = Identity.field(ident.revision, 4)
    for i, d in enumerate(VERSION_DESCRIPTORS):
        struct.pack_into(">H", buf, 58 + 2 * i, d)
    return bytes(buf)


def _page(code: int, body: bytes) -> bytes:
    return struct.pack(">BBH", PDT_DIRECT_ACCESS, code, len(body)) + body


def _designator(proto_codeset: int, piv_assoc_type: int, value: bytes) -> bytes:
    return struct.pack(">BBBB", proto_codeset, piv_assoc_type, 0, len(value)) + value


def device_identification(ident: Identity) -> bytes:
    """VPD 0x83 body: NAA and T10 vendor ID of the LU; with a WWPN, the FC target port's NAA
    designator and its relative port number (association = target port, PIV=1, protocol FC)."""
    body = _designator(_CODE_SET_BINARY, (_ASSOC_LU << 4) | _TYPE_NAA, ident.naa_bytes())
    t10 = Identity.field(ident.vendor, 8) + ident.serial.encode("ascii")
    body += _designator(_CODE_SET_ASCII, (_ASSOC_LU << 4) | _TYPE_T10_VENDOR, t10)
    if ident.port_wwpn is not None:
        port = (_PROTO_FC << 4) | _CODE_SET_BINARY
        body += _designator(
            port, _PIV | (_ASSOC_TARGET_PORT << 4) | _TYPE_NAA, ident.port_wwpn.to_bytes(8, "big")
        )
        body += _designator(
            port,
            _PIV | (_ASSOC_TARGET_PORT << 4) | _TYPE_RELATIVE_TARGET_PORT,
            struct.pack(">HH", 0, ident.relative_port),
        )
    return body


def block_limits(max_transfer_blocks: int) -> bytes:
    """VPD 0xB0 body (SBC-3 6.5.3, page length 0x3C).

    No COMPARE AND WRITE, no UNMAP (counts 0, matching LBPU=0 in 0xB2), no WRITE SAME.
    Optimal transfer = maximum: the medium has no preferred size below it.
    """
    body = bytearray(0x3C)
    struct.pack_into(">H", body, 2, 1)  # OPTIMAL TRANSFER LENGTH GRANULARITY: 1 block
    struct.pack_into(">I", body, 4, max_transfer_blocks)  # MAXIMUM TRANSFER LENGTH
    struct.pack_into(">I", body, 8, max_transfer_blocks)  # OPTIMAL TRANSFER LENGTH
    return bytes(body)


def block_device_characteristics() -> bytes:
    """VPD 0xB1 body (SBC-3 6.5.2): MEDIUM ROTATION RATE 1 = non-rotating; form factor not reported."""
    body = bytearray(0x3C)
    struct.pack_into(">H", body, 0, 1)
    return bytes(body)


def logical_block_provisioning() -> bytes:
    """VPD 0xB2 body (SBC-3 6.5.4): no LBPU/LBPWS/LBPWS10/LBPRZ, provisioning type 0 (fully
    provisioned), consistent with LBPME=0 in READ CAPACITY(16)."""
    return bytes(4)


def vpd_page(code: int, ident: Identity, *, max_transfer_blocks: int) -> bytes:
    """A whole VPD page; INVALID FIELD IN CDB (pointing at PAGE CODE) for one we do not support."""
    if code == VPD_SUPPORTED_PAGES:
        return _page(code, bytes(SUPPORTED_VPD))
    if code == VPD_UNIT_SERIAL:
        return _page(code, ident.serial.encode("ascii"))
    if code == VPD_DEVICE_ID:
        return _page(code, device_identification(ident))
    if code == VPD_BLOCK_LIMITS:
        return _page(code, block_limits(max_transfer_blocks))
    if code == VPD_BLOCK_DEVICE_CHARACTERISTICS:
        return _page(code, block_device_characteristics())
    if code == VPD_LOGICAL_BLOCK_PROVISIONING:
        return _page(code, logical_block_provisioning())
    raise invalid_field(2)
