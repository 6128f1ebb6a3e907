"""The fixed 80-byte header and the size bounds (layout in docs/protocol.md).

    off size field
      0    4 magic        b"EDIF"
      4    1 version      2
      5    1 type         MessageType
      6    2 flags        HeaderFlags; undefined bits must be zero
      8    2 port index   the HBA port (control LUN) this message is about
     10    2 reserved     zero
     12    4 body length  bytes of body after the header (padding excluded)
     16    8 epoch        session epoch from APP_START_ANSWER (0 during the handshake)
     24    8 request id   request <-> response correlation (0 for events and heartbeats)
     32    8 sequence     per-direction message sequence within the epoch
     40    8 ack          downstream, sealed: every upstream number <= ack is consumed; else zero
     48   32 auth         sealed: AES-256-GCM tag (16) + 16 zero bytes; unsealed: HMAC-SHA-256

"Sealed" messages (epoch != 0, not a HEARTBEAT) carry their body encrypted under the epoch's key
for their direction, with the first 48 header bytes as associated data; the others (the handshake,
RESPONSE(NOT_STARTED), heartbeats) carry nothing secret and keep an HMAC under the channel key. The
auth field is last, so a reader can check every length before it computes anything.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = b"EDIF"
VERSION = 2
MAC_SIZE = 32  # the auth field
TAG_SIZE = 16  # AES-GCM tag, at the start of the auth field of a sealed message
_PREFIX = struct.Struct(">4sBBHHHIQQQQ")
MAC_OFFSET = _PREFIX.size  # 48: the associated data of a sealed message, the MAC'd prefix of the rest
HEADER_SIZE = MAC_OFFSET + MAC_SIZE  # 80
HEARTBEAT_TYPE = 0xF0  # MessageType.HEARTBEAT, needed before the catalogue is consulted

# 8 blocks of 512 = 1 block of 4096: one parked READ of this size holds any message, and the
# largest message (an ELS of 2112 bytes: 80 + 24 + 2112 = 2216) leaves 1880 bytes to spare.
MAX_MESSAGE_SIZE = 4096
MAX_BODY_SIZE = MAX_MESSAGE_SIZE - HEADER_SIZE
BLOCK_SIZES = (512, 1024, 2048, 4096)


class HeaderFlags(enum.IntFlag):
    ACK_REQUIRED = 0x0001  # set exactly on the event types whose MessageType.needs_ack is true


def is_sealed(msg_type: int, epoch: int) -> bool:
    """Whether a message of this type and epoch has an encrypted body (see the module docstring)."""
    return epoch != 0 and msg_type != HEARTBEAT_TYPE


@dataclass(frozen=True)
class RawHeader:
    """The header fields as integers, before the type is known to be valid."""

    magic: bytes
    version: int
    type: int
    flags: int
    port_index: int
    reserved: int
    body_length: int
    epoch: int
    request_id: int
    sequence: int
    ack: int
    mac: bytes

    @property
    def sealed(self) -> bool:
        return is_sealed(self.type, self.epoch)


def pack_prefix(
    msg_type: int, flags: int, port_index: int, body_length: int, epoch: int, request_id: int,
    sequence: int, ack: int = 0,
) -> bytes:
    """The first 48 header bytes (everything but the auth field)."""
    return _PREFIX.pack(
        MAGIC, VERSION, msg_type, flags, port_index, 0, body_length, epoch, request_id, sequence, ack
    )


def unpack_header(data: bytes) -> RawHeader:
    """Split the header; the caller has checked len(data) >= HEADER_SIZE."""
    fields = _PREFIX.unpack_from(data, 0)
    return RawHeader(*fields, mac=bytes(data[MAC_OFFSET:HEADER_SIZE]))
