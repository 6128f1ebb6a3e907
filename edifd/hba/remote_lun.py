"""RemoteLun: the tenant data path's executor — a TCMU data LUN backed by a LUN behind the HBA.

It forwards every CDB *unchanged* as FCP to (target WWPN, LUN), so the guest talks to the real
target disk (INQUIRY, VPD, MODE SENSE and all); the TCMU handler accepts it because it has
`execute(cmd) -> ScsiResponse | Pending`. Completions arrive on the HBA loop thread and resolve the
Pending there (the TCMU dispatcher's completion path is thread-safe).

While the remote port is logged out (link loss, relogin), commands wait in the HBA up to
`io_timeout` seconds from submission, then fail with CHECK CONDITION, ABORTED COMMAND /
LOGICAL UNIT COMMUNICATION TIME-OUT (0B/08/01). A remote port that rejected a re-login is gone:
commands fail at once with ABORTED COMMAND / LOGICAL UNIT COMMUNICATION FAILURE (0B/08/00).
"""

from __future__ import annotations

import logging
import struct

from edifd.scsi import Pending, ScsiCommand, cdb

from .hba import Hba, HbaError

log = logging.getLogger(__name__)


class RemoteLun:
    def __init__(self, hba: Hba, target_wwpn: int, lun: int, *, io_timeout: float | None = None) -> None:
        if not 0 <= lun < 16384:
            raise ValueError(f"LUN {lun} out of range 0..16383")
        if io_timeout is not None and io_timeout <= 0:
            raise ValueError("io_timeout must be > 0")
        self.hba = hba
        self.target_wwpn = target_wwpn
        self.lun = lun
        self.io_timeout = io_timeout
        self._block_size = 0
        self._num_blocks = 0
        self.forwarded = 0
        self.aborted = 0

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def size(self) -> int:
        return self._block_size * self._num_blocks

    async def attach_async(self, timeout: float) -> None:
        """On the HBA loop: wait for the login, then READ CAPACITY(16). Raises HbaError."""
        if not await self.hba.wait_ready(self.target_wwpn, timeout):
            raise HbaError(f"remote port {self.target_wwpn:016x} not logged in after {timeout}s")
        resp = await self.hba.execute(self.target_wwpn, self.lun,
                                      ScsiCommand(cdb.read_capacity16(32), data_in_len=32), timeout)
        if not resp.ok or resp.valid_len < 12:
            raise HbaError(f"READ CAPACITY(16) of LUN {self.lun} failed: status {resp.status.name}, "
                           f"sense {resp.sense[:14].hex()}")
        last_lba, block_size = struct.unpack_from(">QI", resp.data, 0)
        if block_size not in (512, 1024, 2048, 4096):
            raise HbaError(f"remote LUN {self.lun} has an unsupported block size {block_size}")
        self._block_size, self._num_blocks = block_size, last_lba + 1
        log.info("remote LUN %016x/%d attached: %d blocks of %d bytes", self.target_wwpn, self.lun,
                 self._num_blocks, block_size)

    def assume(self, size: int, block_size: int) -> None:
        """Use a configured geometry instead of attaching first; `verify` checks it later."""
        if block_size not in (512, 1024, 2048, 4096) or size <= 0 or size % block_size:
            raise ValueError(f"bad geometry: {size} bytes of {block_size}-byte blocks")
        self._block_size, self._num_blocks = block_size, size // block_size

    def verify(self, timeout: float) -> str | None:
        """Attach (login + READ CAPACITY) and compare with the assumed geometry.
        None when they agree; otherwise what differs (the LUN keeps the assumed geometry)."""
        assumed = (self._block_size, self._num_blocks)
        self.attach(timeout)
        actual = (self._block_size, self._num_blocks)
        self._block_size, self._num_blocks = assumed
        if actual == assumed:
            return None
        return (f"target reports {actual[1]} blocks of {actual[0]} bytes, configured "
                f"{assumed[1]} blocks of {assumed[0]} bytes")

    def attach(self, timeout: float) -> None:
        """From any thread but the HBA's: `attach_async` and wait."""
        self.hba.run_sync(self.attach_async(timeout), timeout + 1.0)

    def execute(self, cmd: ScsiCommand) -> Pending:
        """Forward `cmd` as FCP; the Pending resolves exactly once, on the HBA thread."""
        pending = Pending(cmd)
        self.forwarded += 1
        self.hba.submit_callback(self.target_wwpn, self.lun, cmd, pending.resolve, self.io_timeout)
        return pending

    def abort(self, cmd: ScsiCommand) -> None:
        """TCMU gave up on a command: its completion is ignored by the ring; it still ends in the
        HBA by io_timeout at the latest (with ABTS if it is in flight then)."""
        self.aborted += 1
