"""What a control LUN's channel keeps across an edifd restart (the file is edifd.edges.state_file).

An edifd restart loses the upstream queue and the HBA model with all its sessions, so the epoch
ends. What must survive is what lets the new process answer the old agent's commands correctly:

* `epoch` and `down_next`: a WRITE of the dead epoch retried across the restart is recognised --
  sequence < down_next was acted on before (GOOD, counted as a retry), >= down_next never was
  (STALE_EPOCH sense: run APP_START);
* `last_digest`: tells that retry from a replay of an older message;
* `up_reserved`: upstream sequence numbers are never reused while this file lives, so a READ
  still carrying an old cursor can never acknowledge a new message. Reserved in steps, so the
  file is not written for every upstream message.

No key material is stored. Record (big-endian): magic "EDCS", version 1, 3 rsvd, port index u16,
2 rsvd, epoch u64, down_next u64, up_reserved u64, last_digest 32 bytes, CRC-32 of all before it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

_FMT = struct.Struct(">4sB3sH2sQQQ32s")
_MAGIC = b"EDCS"
RECORD_SIZE = _FMT.size + 4


class HostStateError(ValueError):
    """A state record is unreadable (wrong magic/version/CRC) or the file cannot be used."""


@dataclass(frozen=True)
class HostState:
    port_index: int = 0
    epoch: int = 0  # 0: no session was established
    down_next: int = 1
    up_reserved: int = 0
    last_digest: bytes = bytes(32)

    def pack(self) -> bytes:
        body = _FMT.pack(_MAGIC, 1, bytes(3), self.port_index, bytes(2), self.epoch, self.down_next,
                         self.up_reserved, self.last_digest)
        return body + struct.pack(">I", zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes) -> HostState:
        if len(data) < RECORD_SIZE:
            raise HostStateError(f"state record of {len(data)} bytes, want {RECORD_SIZE}")
        body, (crc,) = data[: _FMT.size], struct.unpack_from(">I", data, _FMT.size)
        if zlib.crc32(body) != crc:
            raise HostStateError("state record CRC mismatch (torn or foreign file)")
        magic, version, _, port, _, epoch, down_next, up_reserved, digest = _FMT.unpack(body)
        if magic != _MAGIC or version != 1:
            raise HostStateError("not a channel state record of version 1")
        return cls(port, epoch, down_next, up_reserved, digest)
