"""The kinds of LUN edifd serves: one handler class per [[lun]] `type`, behind one daemon.

As tcmu-runner's handlers sit behind one ring loop, the daemon does the same for every LUN
(backstore, ring owner, export, teardown) and asks the LUN's kind only what differs:

* `open(ctx)`: what executes the LUN's CDBs — a `ScsiDisk` over the kind's medium, or, for a
  remote LUN, the pass-through itself; `medium` is then what the status counters come from;
* `size`, `block_size`, `cmd_time_out(config)`: the backstore's geometry and TCMU timeout;
* `stop_response`: what commands still in flight get when the ring owner stops;
* `describe()` (the "lun X: ... MiB <what>" log line) and `status()` (its edifctl entries);
* `quiesce()` before the ring stops, `close()` to release what `open` took.

Adding a kind is one subclass in `KINDS` (and its `type` in `edifd.config.LUN_TYPES`).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from dataclasses import dataclass
from typing import ClassVar

from edifd.channel import ChannelCore, StaticState
from edifd.config import Config, LunConfig, backing_problem, lun_dir_problem
from edifd.edges.file_medium import FileMedium
from edifd.edges.secret_file import load_channel_key
from edifd.edges.state_file import StateFile
from edifd.hba import Hba, InitiatorPort, Timers
from edifd.hba.remote_lun import RemoteLun
from edifd.proto import ChannelKey
from edifd.runtime.engine import EdifEngine
from edifd.scsi import Identity, Medium, ScsiDisk, ScsiResponse, Status
from edifd.tcmu.dispatch import BUSY, Executor

log = logging.getLogger("edifd.daemon")  # the LUN lines are the daemon's, as before kinds had classes

LunMedium = FileMedium | ChannelCore | RemoteLun  # what a kind's `medium` is (edifctl's counters)


@dataclass
class LunContext:
    """What a kind may use while it opens: the configuration, the HBA, the EDIF engines the control
    LUNs have taken so far (the daemon stops them), and the daemon's stop flag."""

    config: Config
    hba: Hba | None
    engines: dict[str, EdifEngine]
    stopping: threading.Event


class LunKind:
    """One LUN's type-specific behaviour; the base is what every kind shares."""

    type: ClassVar[str]
    start_order: ClassVar[int] = 0  # LUNs start by ascending order
    # A stopping ring answers the commands it still holds with this; BUSY: the initiator retries.
    stop_response: ClassVar[ScsiResponse] = BUSY

    def __init__(self, lun: LunConfig) -> None:
        self.lun = lun
        self.medium: LunMedium | None = None  # set by open()
        self.channel: ChannelCore | None = None  # set by a kind whose channel the heartbeat ticks

    def open(self, ctx: LunContext) -> Executor:
        raise NotImplementedError

    @property
    def size(self) -> int:
        return self.lun.size

    @property
    def block_size(self) -> int:
        return self.lun.block_size

    def cmd_time_out(self, config: Config) -> int | None:
        return config.daemon.cmd_time_out

    def describe(self) -> str:
        raise NotImplementedError

    def status(self) -> dict[str, object]:
        return {}

    def quiesce(self) -> None:
        """Before the ring owner stops."""

    def close(self) -> None:
        """Release what open() took; safe to call when open() failed half-way or more than once."""

    def _disk(self, medium: Medium, port_wwpn: int | None = None) -> ScsiDisk:
        lun = self.lun
        return ScsiDisk(medium, Identity(vendor=lun.vendor, product=lun.product, revision=lun.revision,
                                         serial=lun.serial, port_wwpn=port_wwpn))


class FileLunKind(LunKind):
    """A data LUN on a sparse backing file."""

    type = "file"

    def __init__(self, lun: LunConfig) -> None:
        super().__init__(lun)
        self._file: FileMedium | None = None

    def open(self, ctx: LunContext) -> Executor:
        # The checks of `edifd check-config` (edifd.config.check_host), again at the last moment:
        # a directory, a device node or an existing file of another size is refused, never grown.
        lun, state_dir = self.lun, ctx.config.daemon.state_dir
        where = f"lun {lun.name}"
        problem = lun_dir_problem(lun, where, state_dir) or backing_problem(lun, where)
        if problem:
            raise ValueError(problem)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.medium = self._file = FileMedium(lun.path, lun.size, lun.block_size, resize=lun.resize)
        return self._disk(self._file)

    def describe(self) -> str:
        return str(self.lun.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# A control LUN's READs that are still in flight when its ring owner stops end as an ordinary
# "nothing" (GOOD, zero-filled, full length), never as BUSY: a BUSY READ would be retried by the
# guest against a blocked device until the LUN disappears, and the reader would see ENODEV.
_CONTROL_STOP = ScsiResponse(Status.GOOD)


class ControlLunKind(LunKind):
    """The EDIF VM's channel of one HBA port: its key, its state file (what survives a restart), its
    core, and the EDIF engine of that port when the HBA has it."""

    type = "control"
    stop_response = _CONTROL_STOP

    def __init__(self, lun: LunConfig) -> None:
        super().__init__(lun)
        self._store: StateFile | None = None
        self._engine: EdifEngine | None = None

    def open(self, ctx: LunContext) -> Executor:
        lun, d = self.lun, ctx.config.daemon
        if lun.channel_key is None:
            # Nobody holds a random key: READs still park and heartbeat, every WRITE is refused.
            log.warning("lun %s: no channel_key configured; every WRITE will be refused", lun.name)
            key = ChannelKey(secrets.token_bytes(32))
        else:
            key = load_channel_key(lun.channel_key)  # ChannelKeyError names the path, never the key
            log.info("lun %s: channel key %s (fingerprint %s)", lun.name, lun.channel_key, key.fingerprint)
        d.state_dir.mkdir(parents=True, exist_ok=True)
        store = self._store = StateFile(d.state_dir / f"{lun.name}.channel-state")
        restored = store.load()
        port = self._hba_port(ctx.hba)
        if port is not None and any(e.port is port for e in ctx.engines.values()):
            self.close()
            raise ValueError(f"lun {lun.name}: hba port {port.config.name} already has a control LUN")
        engine = EdifEngine(ctx.hba, port) if ctx.hba is not None and port is not None else None
        try:
            core = ChannelCore(
                key, num_blocks=lun.size // lun.block_size, block_size=lun.block_size,
                port_index=lun.port_index, handler=engine,
                state=engine if engine is not None else StaticState(wwpn=lun.wwpn or 0),
                park_time=d.park_time, queue_limit=lun.queue_limit, redeliver_after=d.redeliver_after,
                restored=restored if restored is not None and restored.port_index == lun.port_index else None,
                persist=store.save, name=lun.name)
        except BaseException:
            self.close()
            raise
        if engine is not None:
            assert port is not None
            engine.attach(core.post_event)
            engine.start()
            ctx.engines[lun.name] = self._engine = engine
            log.info("lun %s: EDIF engine of hba port %s (WWPN %016x)", lun.name, port.config.name,
                     port.config.wwpn)
        self.medium = self.channel = core
        return self._disk(core, port_wwpn=lun.wwpn)

    def _hba_port(self, hba: Hba | None) -> InitiatorPort | None:
        """The HBA port this control LUN represents: the one with its `wwpn`, else the
        `port_index`-th [[hba.port]]. None (no HBA, or no such port): the channel answers from a
        static state."""
        lun = self.lun
        if hba is None:
            return None
        if lun.wwpn is not None:
            port = next((p for p in hba.ports if p.config.wwpn == lun.wwpn), None)
            if port is None:
                log.warning("lun %s: no [[hba.port]] has WWPN %016x; HBA requests are not supported",
                            lun.name, lun.wwpn)
            return port
        if lun.port_index < len(hba.ports):
            return hba.ports[lun.port_index]
        log.warning("lun %s: port_index %d names no [[hba.port]]; HBA requests are not supported", lun.name,
                    lun.port_index)
        return None

    def describe(self) -> str:
        return "control LUN"

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.channel is not None:  # sequence numbers, queue, parked READs
            channel = self.channel.status()
            out.update(channel=channel, parked_reads=channel.get("parked"))
        if self._engine is not None:  # the EDIF engine of this LUN's HBA port: sessions, SAs, ESP
            try:
                out["edif"] = self._engine.status()
            except Exception as e:  # status must never take the daemon down
                out["edif"] = {"error": f"{type(e).__name__}: {e}"}
        return out

    def quiesce(self) -> None:
        if self.channel is not None:
            # A parked READ ends as an ordinary "nothing" completion, not as an error.
            n = self.channel.close()
            log.info("lun %s: completed %d parked READ(s) with the heartbeat", self.lun.name, n)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class RemoteLunKind(LunKind):
    """A tenant LUN whose CDBs go, unchanged, as FCP to a LUN of a storage target."""

    type = "remote"
    # After the control LUNs: behind a secure target a remote LUN attaches only once the EDIF VM
    # has authenticated us through its control LUN.
    start_order = 1
    _remote: RemoteLun  # set by open(); the geometry comes from it

    def open(self, ctx: LunContext) -> Executor:
        lun, io_timeout = self.lun, ctx.config.hba.io_timeout
        assert ctx.hba is not None and lun.target_wwpn is not None  # config guarantees both
        rl = self.medium = self._remote = RemoteLun(ctx.hba, lun.target_wwpn, lun.remote_lun,
                                                    io_timeout=io_timeout)
        if lun.size:
            # Configured geometry: serve now (the target may first need the EDIF VM to authenticate
            # us); check it against the target's READ CAPACITY in the background once logged in.
            rl.assume(lun.size, lun.block_size)
            threading.Thread(target=self._verify, args=(ctx.stopping,), name=f"verify:{lun.name}",
                             daemon=True).start()
            return rl
        try:
            rl.attach(io_timeout)
        except Exception as e:
            raise ValueError(f"lun {lun.name}: target {lun.target_wwpn:016x} LUN {lun.remote_lun} via "
                             f"hba port {lun.hba_port}: {e}") from None
        return rl

    def _verify(self, stopping: threading.Event) -> None:
        # Until the login completes (a slow EDIF VM is not an error) or edifd stops.
        lun = self.lun
        while not stopping.is_set():
            try:
                problem = self._remote.verify(30.0)
            except Exception as e:  # not logged in yet, or the HBA is going away
                log.debug("lun %s: capacity check: %s; retrying", lun.name, e)
                stopping.wait(1.0)
                continue
            if problem:
                log.error("lun %s: %s; I/O past the smaller of the two will fail", lun.name, problem)
            else:
                log.info("lun %s: target capacity matches the configured %d bytes", lun.name, lun.size)
            return

    @property
    def size(self) -> int:
        return self._remote.size

    @property
    def block_size(self) -> int:
        return self._remote.block_size

    def cmd_time_out(self, config: Config) -> int | None:
        # TCMU must never give up on a forwarded command before the HBA does (io_timeout, then
        # an ABTS): the initiator then gets the HBA's clear sense, not a LUN communication failure.
        configured = config.daemon.cmd_time_out
        floor = math.ceil(config.hba.io_timeout + Timers().abts_timeout + 10)
        return max(configured or 0, floor) if configured != 0 else 0

    def describe(self) -> str:
        return f"remote LUN {self.lun.remote_lun} of target {self.lun.target_wwpn or 0:016x}"


KINDS: dict[str, type[LunKind]] = {k.type: k for k in (FileLunKind, ControlLunKind, RemoteLunKind)}


def lun_kind(lun: LunConfig) -> LunKind:
    """The handler of `lun`'s type, not opened yet."""
    return KINDS[lun.type](lun)
