"""The fixed 72-byte header and the size bounds (layout in docs/protocol.md).

    off size field
      0    4 magic        b"EDIF"
      4    1 version      1
      5    1 type         MessageType
      6    2 flags        HeaderFlags; undefined bits must be zero
      8    2 port index   the HBA port (control LUN) this message is about
     10    2 reserved     zero
     12    4 body length  bytes of body after the header (padding excluded)
     16    8 epoch        session epoch from APP_START_ANSWER (0 during the handshake)
     24    8 request id   request <-> response correlation (0 for events and heartbeats)
     32    8 sequence     per-direction message sequence within the epoch
     40   32 MAC          HMAC-SHA-256(channel key, header with MAC zeroed || body)

The MAC is the last header field so that "header with MAC zeroed" is simply the first 40 bytes
followed by 32 zero bytes, and a reader can check every length before it computes anything.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = b"EDIF"
VERSION = 1
MAC_SIZE = 32
_PREFIX = struct.Struct(">4sBBHHHIQQQ")
MAC_OFFSET = _PREFIX.size  # 40
HEADER_SIZE = MAC_OFFSET + MAC_SIZE  # 72

# 8 blocks of 512 = 1 block of 4096: one parked READ of this size holds any message, and the
# largest message (an ELS of 2112 bytes: 72 + 24 + 2112 = 2208) leaves 1888 bytes to spare.
MAX_MESSAGE_SIZE = 4096
MAX_BODY_SIZE = MAX_MESSAGE_SIZE - HEADER_SIZE
BLOCK_SIZES = (512, 1024, 2048, 4096)


class HeaderFlags(enum.IntFlag):
    ACK_REQUIRED = 0x0001  # set exactly on the event types whose MessageType.needs_ack is true


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
    mac: bytes

    def prefix(self) -> bytes:
        return _PREFIX.pack(
            self.magic,
            self.version,
            self.type,
            self.flags,
            self.port_index,
            self.reserved,
            self.body_length,
            self.epoch,
            self.request_id,
            self.sequence,
        )


def pack_prefix(
    msg_type: int, flags: int, port_index: int, body_length: int, epoch: int, request_id: int, sequence: int
) -> bytes:
    """The first 40 header bytes (everything but the MAC)."""
    return _PREFIX.pack(
        MAGIC, VERSION, msg_type, flags, port_index, 0, body_length, epoch, request_id, sequence
    )


def unpack_header(data: bytes) -> RawHeader:
    """Split the header; the caller has checked len(data) >= HEADER_SIZE."""
    fields = _PREFIX.unpack_from(data, 0)
    return RawHeader(*fields, mac=bytes(data[MAC_OFFSET:HEADER_SIZE]))
