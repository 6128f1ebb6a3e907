"""Where channel commands live on the control LUN: the LBA layout both ends compute from its capacity.

    [ guard ][ READ window: LANES lanes x W slots ][ 1 gap slot ][ WRITE window: W slots ][ ... ][ guard ]

A slot is MAX_MESSAGE_SIZE (4096) bytes, i.e. 4096 / block_size blocks.

* A READ of slot `lane * W + (cursor mod W)` in a cursor lane (0..CURSOR_LANES-1, one per
  outstanding READ) tells the host "I have consumed every upstream message up to `cursor`". Lanes
  keep the LBAs of parked READs distinct, and W slots apart, so the guest block layer never merges
  two of them.
* The last lane (NO_CURSOR_LANE) is for READs of an agent that has no epoch yet (it does not know
  where the host's numbering stands): they acknowledge nothing. Its READs use slots 0, 2, 4, ...
* A WRITE to slot `seq mod W` of the WRITE window carries downstream message `seq` (the header
  says the same, MAC'd); a SCSI retry of that WRITE is recognisably the same command.
* The guards (1 MiB at each end) are what partition scans and blkid read: READs outside the READ
  window complete at once with zeros and carry no cursor; WRITEs outside the WRITE window are refused.

Values are carried modulo W; `unwrap` picks the value nearest to a reference the receiver
already holds, which is exact while the two stay within W/2 of each other (the channel keeps its
queue far smaller than that: ChannelCore checks W >= 4 * (queue_limit + LANES)).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .framing import BLOCK_SIZES, MAX_MESSAGE_SIZE

SLOT_BYTES = MAX_MESSAGE_SIZE
LANES = 8  # lanes of the READ window
CURSOR_LANES = LANES - 1  # most READs an established agent may have outstanding (notes advise 4-8)
NO_CURSOR_LANE = LANES - 1
GUARD_BYTES = 1 << 20
MIN_WINDOW = 64


class GeometryError(ValueError):
    """The capacity or block size cannot hold the channel layout, or an LBA is not a channel slot."""


class OutsideWindowError(GeometryError):
    """A WRITE that does not start inside the WRITE window."""


@dataclass(frozen=True)
class ChannelGeometry:
    block_size: int
    num_blocks: int

    def __post_init__(self) -> None:
        if self.block_size not in BLOCK_SIZES:
            raise GeometryError(f"block size {self.block_size} not in {BLOCK_SIZES}")
        if self.window < MIN_WINDOW:
            need = (2 * GUARD_BYTES + ((LANES + 1) * MIN_WINDOW + 1) * SLOT_BYTES) >> 20
            raise GeometryError(
                f"control LUN of {self.num_blocks} blocks is too small (at least {need + 1} MiB)")

    @cached_property  # frozen dataclass: computed once, kept in the instance dict
    def slot_blocks(self) -> int:
        return SLOT_BYTES // self.block_size

    @cached_property
    def guard_blocks(self) -> int:
        return GUARD_BYTES // self.block_size

    @cached_property
    def window(self) -> int:
        """W: slots per lane and in the WRITE window."""
        slots = max(0, self.num_blocks - 2 * self.guard_blocks) // self.slot_blocks
        return max(0, (slots - 1) // (LANES + 1))

    @cached_property
    def read_base(self) -> int:
        return self.guard_blocks

    @cached_property
    def write_base(self) -> int:
        return self.guard_blocks + (LANES * self.window + 1) * self.slot_blocks

    # --- agent side: build ---------------------------------------------------------------------

    def read_lba(self, cursor: int, lane: int) -> int:
        if not 0 <= lane < LANES:
            raise GeometryError(f"lane {lane} not in 0..{LANES - 1}")
        return self.read_base + (lane * self.window + cursor % self.window) * self.slot_blocks

    def write_lba(self, seq: int) -> int:
        return self.write_base + (seq % self.window) * self.slot_blocks

    # --- host side: classify -------------------------------------------------------------------

    def in_read_window(self, lba: int) -> bool:
        return self.read_base <= lba < self.read_base + LANES * self.window * self.slot_blocks

    def parse_read(self, lba: int, nblocks: int) -> tuple[int, int]:
        """(cursor residue, lane) of a READ inside the READ window; GeometryError if it is not one
        whole slot."""
        off = lba - self.read_base
        if off % self.slot_blocks or nblocks != self.slot_blocks:
            raise GeometryError("a channel READ is exactly one aligned 4096-byte slot")
        slot = off // self.slot_blocks
        return slot % self.window, slot // self.window

    def parse_write(self, lba: int, nblocks: int) -> int:
        """Sequence residue of a WRITE; GeometryError if it is not inside one slot of the WRITE window."""
        off = lba - self.write_base
        if off < 0 or off >= self.window * self.slot_blocks:
            raise OutsideWindowError("WRITE outside the message window")
        if off % self.slot_blocks or not 0 < nblocks <= self.slot_blocks:
            raise GeometryError("a channel WRITE starts at a slot and is at most 4096 bytes")
        return off // self.slot_blocks

    def unwrap(self, residue: int, near: int) -> int:
        """The value congruent to residue (mod W) nearest to `near` (ties go below). May be < 0."""
        w = self.window
        delta = (residue - near) % w
        if delta > (w - 1) // 2:  # result in [near - w//2, near + (w-1)//2]
            delta -= w
        return near + delta
