"""Both ends of the channel in one process, joined through the SCSI layer: for tests and the bench.

The agent's ChannelClient produces LBAs and payloads; this module turns them into READ(10/16) and
WRITE(10/16) CDBs for ScsiDisk(ChannelCore) and carries the completions back. Every step is
explicit, so a test can lose, reorder, duplicate or abort any of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edifd.proto import Message
from edifd.scsi import Pending, ScsiCommand, ScsiDisk, ScsiResponse, Status


def read_cdb(lba: int, nblocks: int, block_size: int, tag: int = 0) -> ScsiCommand:
    """READ(10), or READ(16) above 2^32 blocks, as the guest kernel issues them."""
    if lba > 0xFFFFFFFF or nblocks > 0xFFFF:
        cdb = struct.pack(">BBQIBB", 0x88, 0, lba, nblocks, 0, 0)
    else:
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, nblocks, 0)
    return ScsiCommand(cdb, data_in_len=nblocks * block_size, tag=tag)


def write_cdb(lba: int, payload: bytes, block_size: int, tag: int = 0) -> ScsiCommand:
    """WRITE(10), or WRITE(16) above 2^32 blocks; the payload zero-padded to whole blocks."""
    nblocks = -(-len(payload) // block_size)
    data = bytes(payload).ljust(nblocks * block_size, b"\x00")
    if lba > 0xFFFFFFFF:
        cdb = struct.pack(">BBQIBB", 0x8A, 0, lba, nblocks, 0, 0)
    else:
        cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, nblocks, 0)
    return ScsiCommand(cdb, data_out=data, tag=tag)


@dataclass
class InflightRead:
    token: int
    command: ScsiCommand
    result: ScsiResponse | Pending

    @property
    def done(self) -> bool:
        return isinstance(self.result, ScsiResponse) or self.result.done

    @property
    def response(self) -> ScsiResponse:
        r = self.result if isinstance(self.result, ScsiResponse) else self.result.result
        assert r is not None
        return r


@dataclass
class Loopback:
    """disk = ScsiDisk(core); client = the agent. Nothing runs unless a method is called."""

    disk: ScsiDisk
    client: object  # guest_agent.client.ChannelClient (kept untyped: edifd does not import the agent)
    reads: dict[int, InflightRead] = field(default_factory=dict)
    delivered: list[Message] = field(default_factory=list)
    write_statuses: list[ScsiResponse] = field(default_factory=list)

    @property
    def block_size(self) -> int:
        return self.disk.medium.block_size

    def issue_read(self) -> InflightRead:
        req = self.client.next_read()  # type: ignore[attr-defined]
        cmd = read_cdb(req.lba, req.nblocks, self.block_size, tag=req.token)
        r = InflightRead(req.token, cmd, self.disk.execute(cmd))
        self.reads[req.token] = r
        return r

    def fill_reads(self, k: int) -> None:
        while len(self.reads) < k:
            self.issue_read()

    def done_reads(self) -> list[InflightRead]:
        return [r for r in self.reads.values() if r.done]

    def finish_read(self, r: InflightRead, *, lose: bool = False) -> list[Message]:
        """Hand a completed READ to the client (or lose its completion: the agent never sees it)."""
        del self.reads[r.token]
        resp = r.response
        if lose:
            self.client.read_failed(r.token)  # type: ignore[attr-defined]
            return []
        if resp.status != Status.GOOD:
            self.client.read_failed(r.token)  # type: ignore[attr-defined]
            return []
        msgs = self.client.read_done(r.token, resp.data)  # type: ignore[attr-defined]
        self.delivered += msgs
        return msgs

    def abort_read(self, r: InflightRead) -> None:
        """The transport aborts a parked READ (TMR): the host forgets it, the agent sees EIO."""
        del self.reads[r.token]
        self.disk.abort(r.command)
        self.client.read_failed(r.token)  # type: ignore[attr-defined]

    def write_once(self, *, lose_status: bool = False, duplicate: bool = False) -> ScsiResponse | None:
        """Issue the client's next WRITE. lose_status: the host acts but the agent sees a failure
        (so it retries the same WRITE). duplicate: the transport delivers it twice."""
        w = self.client.next_write()  # type: ignore[attr-defined]
        if w is None:
            return None
        cmd = write_cdb(w.lba, w.payload, self.block_size, tag=w.token)
        resp = self.disk.execute(cmd)
        assert isinstance(resp, ScsiResponse), "control-LUN WRITEs complete at once"
        if duplicate:
            resp = self.disk.execute(cmd)
            assert isinstance(resp, ScsiResponse)
        self.write_statuses.append(resp)
        ok = resp.status == Status.GOOD and not lose_status
        self.client.write_done(w.token, ok, b"" if lose_status else resp.sense)  # type: ignore[attr-defined]
        return resp

    def pump(self, k: int = 4, rounds: int = 50) -> list[Message]:
        """Run writes and READ completions until nothing moves (or `rounds`); keep k READs armed."""
        out: list[Message] = []
        for _ in range(rounds):
            moved = False
            while (resp := self.write_once()) is not None:
                moved = True
                if resp.status != Status.GOOD:
                    break  # retried in the next round
            for r in self.done_reads():
                out += self.finish_read(r)
                moved = True
            self.fill_reads(k)
            if not moved and not self.done_reads():
                break
        return out
