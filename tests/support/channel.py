"""Shared pieces of the channel tests (no tests here): counting handler, loopback builder, raw WRITEs
and sense helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

from edifd.channel import BasicHandler, ChannelCore, HostState, Reject, StaticState
from edifd.channel.loopback import Loopback, write_cdb
from edifd.proto import Body, ChannelKey, EpochKeys, Message, encode
from edifd.scsi import ScsiDisk, ScsiResponse
from edifd.scsi.sense import SenseData
from guest_agent.client import ChannelClient
from tests.support.clock import Clock

KEY = ChannelKey(bytes(range(1, 33)))
OTHER_KEY = ChannelKey(bytes(range(101, 133)))
N_BLOCKS = (16 << 20) // 512  # the lab's control LUN size


class CountingHandler(BasicHandler):
    """BasicHandler that records every request it acts on."""

    def __init__(self) -> None:
        super().__init__(StaticState(wwpn=0x2100_0024_FF00_0001, wwnn=0x2000_0024_FF00_0001))
        self.handled: list[Message] = []

    def handle(self, msg: Message):  # type: ignore[override]
        self.handled.append(msg)
        return super().handle(msg)


@dataclass
class Store:
    """In-memory stand-in for StateFile."""

    saved: list[HostState] = field(default_factory=list)

    def save(self, s: HostState) -> None:
        self.saved.append(s)

    @property
    def last(self) -> HostState:
        return self.saved[-1]


def make_core(clock: Clock, handler=None, store: Store | None = None, restored: HostState | None = None,
              key: ChannelKey = KEY, **kw) -> ChannelCore:
    return ChannelCore(key, num_blocks=kw.pop("num_blocks", N_BLOCKS), clock=clock, handler=handler,
                       persist=store.save if store else None, restored=restored, **kw)


def make_client(clock: Clock, key: ChannelKey = KEY, state: bytes | None = None, **kw) -> ChannelClient:
    blocks = kw.pop("capacity_blocks", N_BLOCKS)
    return ChannelClient(key, capacity_blocks=blocks, clock=clock, state=state, **kw)


def loop(core: ChannelCore, client: ChannelClient) -> Loopback:
    return Loopback(ScsiDisk(core), client)


def established(clock: Clock, handler=None, store: Store | None = None, **kw):
    core = make_core(clock, handler, store, **kw)
    client = make_client(clock, capacity_blocks=core.num_blocks)
    lb = loop(core, client)
    client.start()
    lb.pump()
    assert client.established and core.established
    # READs issued during the handshake carry no cursor; recycle them as the heartbeat would.
    core.release_all()
    lb.pump()
    return lb, core, client


def foreign_keys(epoch: int, key: ChannelKey = KEY, port: int = 0) -> EpochKeys:
    """Keys of an epoch no handshake with the host made (nonces nobody exchanged)."""
    return EpochKeys.derive(key, port, bytes(32), bytes(range(32)), epoch)


def raw_write(core: ChannelCore, clock: Clock, body: Body, seq: int, *, epoch: int | None = None,
              key: ChannelKey = KEY, port: int = 0, rid: int = 900, ack: int = 0,
              lba: int | None = None) -> tuple[ScsiResponse, bytes]:
    """One WRITE of an encoded message with this exact header, bypassing the agent (default epoch:
    the core's current one), sealed under the host's keys of that epoch when it holds them (else
    under keys of a handshake that never happened)."""
    msg = Message(body, port, core._down.current.epoch if epoch is None else epoch, rid, seq, ack)
    keys = core._down.keys
    if msg.sealed and all(k.epoch != msg.epoch for k in keys):
        keys = (foreign_keys(msg.epoch, key, port),)
    data = encode(msg, key, keys=keys)
    cmd = write_cdb(core.geometry.write_lba(seq) if lba is None else lba, data, 512)
    resp = ScsiDisk(core).execute(cmd)
    assert isinstance(resp, ScsiResponse), "control-LUN WRITEs complete at once"
    return resp, data


def sense_of(resp: ScsiResponse) -> tuple[int, int, int]:
    s = SenseData.parse(resp.sense)
    return s.key, s.asc, s.ascq


def reject_sense(r: Reject) -> tuple[int, int, int]:
    return tuple(r.value[1:])  # type: ignore[return-value]


def seqs(msgs: list[Message]) -> list[int]:
    return [m.sequence for m in msgs]
