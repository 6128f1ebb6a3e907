"""EDIF end to end, in one process: edif-agent's SecurityApp -> ChannelClient -> SCSI loopback ->
ChannelCore -> EdifEngine -> Hba (FC over TCP) -> TargetServer with its AuthResponder (PSK per
initiator) -> backing file. Everything is the real code; only the SCSI transport of the control LUN
is the in-process loopback, and the agent is pumped by a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
import time
from pathlib import Path

import pytest

from edifd.channel import ChannelCore
from edifd.channel.loopback import Loopback
from edifd.fc.pcap import read_records
from edifd.hba import SENSE_NOT_AUTHORIZED, Hba, PortConfig, RequireAuthWhenSecure, SessionState, Timers
from edifd.proto import Body, ChannelKey, Cipher, SaDirection
from edifd.runtime.engine import EdifEngine
from edifd.scsi import ScsiCommand, ScsiDisk, Status
from edifd.secapp.app import SecurityApp, SessionRekeyed
from edifd.secapp.app import SessionState as AppState
from edifd.secapp.config import (
    AES_GCM_16_256,
    IkePolicy,
    PeerPolicy,
    PskCredentials,
    RekeyPolicy,
    SecConfig,
)
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer
from guest_agent.client import ChannelClient

KEY = ChannelKey(bytes(range(1, 33)))
BLOCKS = (16 << 20) // 512
HOST1, HOST2 = 0x2000001B32A0B0C1, 0x2000001B32A0B0D1  # lower than the targets: they originate PLOGI
T1, T2 = 0x2100001B32A0B0C2, 0x2100001B32A0B0C3
PSK1 = b"correct horse battery staple 1!!"
PSK2 = b"another long pre-shared secret 22"
WRONG = b"not the secret the initiator has!"
MiB = 1 << 20


def _wait(cond, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Agent:
    """One control LUN: ChannelCore(handler=engine) <- loopback SCSI <- ChannelClient <- SecurityApp,
    pumped by a thread the way edif-agent's main loop does it."""

    def __init__(self, engine: EdifEngine, peers: dict[int, bytes], *, keepalive: float = 1.0,
                 rekey: RekeyPolicy | None = None, ike: IkePolicy | None = None) -> None:
        self.engine = engine
        self.core = ChannelCore(KEY, num_blocks=BLOCKS, handler=engine, state=engine, park_time=0.2)
        engine.attach(self.core.post_event)
        cfg = SecConfig(peers={w: PeerPolicy(w, PskCredentials(p)) for w, p in peers.items()},
                        keepalive_interval=keepalive, keepalive_misses=20, reconnect_delay=0.2,
                        auth_retry_backoff=30.0, rekey=rekey or RekeyPolicy(lifetime=3600.0, bytes=0),
                        ike=ike or IkePolicy())
        self.app = SecurityApp(cfg, time.monotonic)
        self.client = ChannelClient(KEY, capacity_blocks=BLOCKS, clock=time.monotonic,
                                    keepalive_ms=int(keepalive * 1000))
        self.lb = Loopback(ScsiDisk(self.core), self.client)
        self.events: list = []
        self.lock = threading.Lock()
        self.paused = False
        self._stop = False
        self.client.start()
        self.lb.pump()
        assert self.client.established
        self._send(self.app.start())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, items: list) -> None:
        for item in items:
            if isinstance(item, Body):
                self.app.sent(item, self.client.request(item))
            else:
                self.events.append(item)

    def _run(self) -> None:
        while not self._stop:
            if not self.paused:
                with self.lock:
                    self._send(self.app.tick(time.monotonic()))
                    for m in self.lb.pump(k=4, rounds=3):
                        self._send(self.app.on_message(m))
                    self.core.tick()
            time.sleep(0.003)

    def call(self, fn):
        with self.lock:
            self._send(fn())

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)


class Target:
    def __init__(self, tmp: Path, auth: dict[str, SecConfig]) -> None:
        def port(name: str, wwpn: int) -> TargetPortConfig:
            lun = LunConfig(0, str(tmp / f"{name}.img"), 64 * MiB)
            return TargetPortConfig(name, wwpn, wwpn - (1 << 56), ("127.0.0.1", 0), (lun,), True, auth[name])

        self.server = TargetServer(TargetConfig((port("t1", T1), port("t2", T2))))
        self.server.start_thread(10)

    def address(self, name: str) -> tuple[str, int]:
        return self.server.port(name).address

    def close(self) -> None:
        self.server.stop_thread(10)


def _initiators(psk: bytes) -> SecConfig:
    return SecConfig(peers={w: PeerPolicy(w, PskCredentials(psk)) for w in (HOST1, HOST2)}, ike=IkePolicy())


def _write(hba: Hba, wwpn: int, lba: int, data: bytes):
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0)
    return hba.submit(wwpn, 0, ScsiCommand(cdb, data_out=data)).result(30)


def _read(hba: Hba, wwpn: int, lba: int, n: int):
    cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, n // 512, 0)
    return hba.submit(wwpn, 0, ScsiCommand(cdb, data_in_len=n)).result(30)


@pytest.fixture
def rig(tmp_path: Path):
    target = Target(tmp_path, {"t1": _initiators(PSK1), "t2": _initiators(WRONG)})
    pcap = tmp_path / "hba.pcap"
    hba = Hba([PortConfig("p1", HOST1, HOST1 - 1, target.address("t1"), remote_wwpn=T1, pcap_path=str(pcap)),
               PortConfig("p2", HOST2, HOST2 - 1, target.address("t2"), remote_wwpn=T2)],
              Timers(io_timeout=8.0), policy=RequireAuthWhenSecure())
    hba.start_thread()
    engines = [EdifEngine(hba, p) for p in hba.ports]
    for e in engines:
        e.start()
    # Wait for both links to log in (non-secure: the targets refuse PRLI, AUTH_PENDING).
    _wait(lambda: all(p.session.state is SessionState.AUTH_PENDING for p in hba.ports), what="first logins")
    # The first port negotiates 256-bit ESP keys only; the responder offers both sizes.
    rekey = RekeyPolicy(lifetime=3600.0, bytes=2 * MiB, stats_interval=0.5)
    agents = [Agent(engines[0], {T1: PSK1}, rekey=rekey, ike=IkePolicy(esp_ciphers=(AES_GCM_16_256,))),
              Agent(engines[1], {T2: PSK2})]
    yield target, hba, engines, agents, pcap
    for a in agents:
        a.close()
    for e in engines:
        e.stop()
    hba.stop_thread()
    target.close()


def test_edif_end_to_end(rig):
    target, hba, engines, agents, pcap = rig
    a1, a2 = agents
    # The whole flow: APP_START .. SECURE_CONNECT .. IKE over AUTH_ELS .. SA_UPDATE .. AUTH_OK .. PRLI.
    _wait(lambda: a1.app.session(T1) is not None and a1.app.session(T1).state is AppState.SECURE,
          what="secure T1")
    _wait(lambda: hba.ports[0].session.state is SessionState.READY, what="PRLI after AUTH_OK")
    sas = hba.ports[0].security.login_sas  # the HBA holds the login's SAs
    assert engines[0].login.secure and sas is not None and sas.sadb.both_confirmed
    assert sas.sadb.tx_sa.cipher is Cipher.AES_GCM_256
    t1 = target.server.port("t1")
    # Wrong PSK on the second target: AUTH_FAIL, the login held, no FCP ever reached t2.
    _wait(lambda: engines[1].counters.auth_fail >= 1, what="AUTH_FAIL on T2")
    _wait(lambda: hba.ports[1].session.state is SessionState.GONE, what="T2 held")
    _wait(lambda: engines[1].counters.shutdowns_acked == 1, what="SESSION_SHUTDOWN acked by the agent")
    r = _read(hba, T2, 0, 4096)
    assert r.status == Status.CHECK_CONDITION and r.sense == SENSE_NOT_AUTHORIZED
    t2 = target.server.port("t2")
    assert t2.edif.counters.auth_failed >= 1
    sessions = [x.counters.snapshot() for x in t2.sessions] + t2.sessions_closed
    assert sessions and all(c["commands"] == 0 for c in sessions)  # no FCP_CMND ever reached t2
    assert not any(x.image_pair for x in t2.sessions)

    # 8 MiB written and read back through ESP, with a rekey (bytes trigger: 2 MiB) during I/O.
    pattern = hashlib.shake_256(b"edif").digest(MiB) * 8
    for i in range(8):
        assert _write(hba, T1, i * 2048, pattern[i * MiB:(i + 1) * MiB]).status == Status.GOOD
    back = b"".join(_read(hba, T1, i * 2048, MiB).data for i in range(8))
    assert hashlib.sha256(back).digest() == hashlib.sha256(pattern).digest()
    _wait(lambda: any(isinstance(e, SessionRekeyed) for e in a1.events), what="rekey")
    for i in range(4):  # I/O on the new pair
        assert _read(hba, T1, i * 2048, MiB).data == pattern[i * MiB:(i + 1) * MiB]
    with open(t1.config.luns[0].path, "rb") as f:
        assert hashlib.sha256(f.read(8 * MiB)).digest() == hashlib.sha256(pattern).digest()
    assert hba.ports[0].security.query_sa().counters.rekeys >= 1
    # Make-before-break finishes: the old RX SA goes once frames arrive on the new one (the agent's
    # DELETE may come after the reads above, so keep a little I/O going); one pair is left.
    _wait(lambda: _read(hba, T1, 0, 8192).status == Status.GOOD
          and len(sas.sadb.sas(SaDirection.RX)) == 1, what="old RX SA removed")
    assert len(sas.sadb.sas(SaDirection.TX)) == 1 and hba.ports[0].security.login_sas is sas
    assert sum(hba.ports[0].security.query_sa().counters.drops.values()) == 0
    hba.ports[0]._pcap_file.flush()  # noqa: SLF001 - read the trace while the port runs

    # The trace: ESP on every FCP frame, never on ELS/BLS; the pattern never in clear.
    frames = read_records(pcap.read_bytes())  # SOF | header | data field | CRC | EOF
    fcp = [f for f in frames if f[4 + 8] == 0x08]
    other = [f for f in frames if f[4 + 8] != 0x08]
    assert len(fcp) > 8000 and other
    assert all(f[4 + 13] & 0x40 for f in fcp)
    assert not any(f[4 + 13] & 0x40 for f in other)
    assert any(f[4 + 8] == 0x01 and f[28] == 0x90 for f in other)  # AUTH_ELS on the link
    blob = b"".join(frames)
    for i in range(0, 8 * MiB, 512 * 1024):
        assert pattern[i:i + 64] not in blob

    # APP_STOP: the secure session is logged out; I/O to T1 then fails cleanly.
    a1.call(a1.app.stop)
    _wait(lambda: hba.ports[0].session.state is SessionState.GONE, what="logout after APP_STOP")
    assert engines[0].login is None and engines[0].counters.app_stops == 1
    r = _read(hba, T1, 0, 4096)
    assert r.status == Status.CHECK_CONDITION and r.sense == SENSE_NOT_AUTHORIZED


def test_keepalive_loss_logs_out(rig):
    target, hba, engines, agents, pcap = rig
    a1 = agents[0]
    _wait(lambda: hba.ports[0].session.state is SessionState.READY, what="secure T1")
    assert _write(hba, T1, 0, bytes(4096)).status == Status.GOOD
    a1.paused = True  # the EDIF VM hangs: no KEEPALIVE any more
    _wait(lambda: (a1.core.tick() or True) and engines[0].counters.agent_lost == 1, timeout=10,
          what="agent silent")
    _wait(lambda: hba.ports[0].session.state is SessionState.GONE, what="logout after agent loss")
    r = _read(hba, T1, 0, 4096)
    assert r.status == Status.CHECK_CONDITION and r.sense == SENSE_NOT_AUTHORIZED
    # The agent was only hung: when it runs again it reads SESSION_SHUTDOWN(KEYS_REMOVED), connects
    # again and authenticates a new login.
    gen = engines[0].generation
    a1.paused = False
    _wait(lambda: hba.ports[0].session.state is SessionState.READY and engines[0].generation > gen,
          what="secure again after the agent resumed")
    shut = [m.body for m in a1.lb.delivered if type(m.body).__name__ == "SessionShutdown"]
    assert [s.reason.name for s in shut] == ["KEYS_REMOVED"]
    assert _read(hba, T1, 0, 4096).data == bytes(4096)


def test_unauthenticated_secure_initiator_is_refused(rig):
    """An initiator that sets the security bit but never authenticates: PRLI refused (0x48), and FCP
    it sends anyway is dropped by the target; nothing executes."""
    from edifd.fc import (
        FcipStreamDecoder,
        FcpCmnd,
        FcpServiceParams,
        LsRjt,
        Prli,
        PrliFlags,
        ServiceParamPage,
        els_request,
        encode_frame,
        fcp_cmnd_frame,
        parse_payload,
    )
    from edifd.hba import InitiatorSession

    target, hba, engines, agents, pcap = rig
    t1 = target.server.port("t1")
    host, port = target.address("t1")

    async def run():
        reader, writer = await asyncio.open_connection(host, port)
        s = InitiatorSession(0x2000001B32A0B0E1, 0x2000001B32A0B0E0, security=True)
        dec = FcipStreamDecoder()

        async def exchange(frames):
            for f in frames:
                writer.write(encode_frame(f))
            await writer.drain()
            got = []
            try:
                while True:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                    if not data:
                        break
                    got += dec.feed(data)
            except TimeoutError:
                pass
            return got

        got = await exchange(s.connected(0.0))
        for _ in range(3):
            out = []
            for f in got:
                out += s.receive(f, 0.0)
            got = await exchange(out) if out else []
        assert s.state is SessionState.AUTH_PENDING  # target refused PRLI: authentication required
        page = ServiceParamPage(FcpServiceParams.INITIATOR, PrliFlags.ESTABLISH_IMAGE_PAIR)
        prli = els_request(s_id=s.local_id, d_id=s.remote_id, ox_id=0x4000, els=Prli((page,)))
        got = await exchange([prli])
        rjt = [parse_payload(f, reply_to=0x20) for f in got]
        assert any(isinstance(x, LsRjt) and int(x.explanation) == 0x48 for x in rjt)
        cmnd = FcpCmnd(lun=bytes(8), cdb=bytes(6), dl=0)  # TEST UNIT READY in clear
        got = await exchange([fcp_cmnd_frame(s_id=s.local_id, d_id=s.remote_id, ox_id=0x4001, cmnd=cmnd)])
        assert got == []  # no FCP_RSP: refused
        (ts,) = [x for x in t1.sessions if x.initiator_wwpn == 0x2000001B32A0B0E1]
        assert ts.counters.dropped_frames >= 1 and ts.counters.commands == 0 and not ts.image_pair
        assert ts.transform.counters.drops.get("clear_fcp") == 1
        writer.close()
        await writer.wait_closed()

    asyncio.run(run())


def test_link_drop_reauthenticates_with_new_keys(rig):
    """LINK_DOWN/SESSION_SHUTDOWN, then LINK_UP, a new secure login (new generation, new SAs) and I/O."""
    target, hba, engines, agents, pcap = rig
    a1 = agents[0]
    _wait(lambda: hba.ports[0].session.state is SessionState.READY, what="secure T1")
    first, first_sas = engines[0].login, hba.ports[0].security.login_sas
    spi = first_sas.sadb.tx_sa.spi
    assert _write(hba, T1, 8, b"\xa5" * 4096).status == Status.GOOD
    hba.call_soon(hba.ports[0].drop_link)
    _wait(lambda: engines[0].login is not first and engines[0].login is not None
          and hba.ports[0].session.state is SessionState.READY, what="secure again after the link drop")
    assert engines[0].generation > first.generation and hba.ports[0].security.login_sas.sadb.tx_sa.spi != spi
    assert not first_sas.sadb.sas(SaDirection.TX)  # the old login's keys were cleared
    assert _read(hba, T1, 8, 4096).data == b"\xa5" * 4096
    shut = [m.body for m in a1.lb.delivered if type(m.body).__name__ == "SessionShutdown"]
    assert [s.reason.name for s in shut] == ["LINK_DOWN"]
    assert {"LinkDown", "LinkUp"} <= {type(m.body).__name__ for m in a1.lb.delivered}
