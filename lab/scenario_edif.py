"""The EDIF lab scenario (part of ``make lab``): encrypted storage traffic on real kernels, end to end.

* this host runs edif-target's code: two target ports (A and B), each its own ``TargetServer`` so each writes
  its own pcap (edif-target has one trace file per process), with the EDIF responder: A knows port p0's PSK,
  B has a *different* PSK for p1 than the agent (-> AUTH_FAIL);
* VM-H (``lab.guest.host_edif``) runs edifd: two secure HBA ports linked to A and B over slirp (10.0.2.2), one
  control LUN per port exported over iSCSI, and a tenant LUN behind A on tcm_loop;
* VM-S (``lab.guest.edifvm_edif``) maps both control LUNs with QEMU's iSCSI initiator and runs one
  ``edif-agent run --config`` per port: the security service authenticates the targets over the disk channel.

Phases (printed with timings): agent started; A secured and B AUTH_FAIL; 64 MiB written and read back through
ESP with a 10 s rekey lifetime (>= 1 rekey during I/O, 0 errors); the backing file; the traces (DF_CTL 0x40 +
ESP header on every FCP frame, on no ELS/BLS frame, the pattern never in clear, no FCP_CMND at B); the agent
stopped (SIGTERM -> APP_STOP) -> A logged out -> tenant I/O fails at once. Keys and PSKs are random per run,
written 0600 into the shares, never logged or put in the summary.

The channel's secrecy (lab.capture): this host's loopback is captured on the control LUNs' iSCSI port for the
whole run, and every SA_UPDATE seen there is searched for the keys that would open trace A (0 found); during
the tenant I/O a keyless second iSCSI session reads p0's control LUN at every cursor lane and gets only sealed
messages, while the agent loses nothing.

The verdict logic (``verdicts``, ``check_trace``) is pure and unit-tested on synthetic data; the traces are
read with edifd.fc.pcap's ``read_records``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edifd.fc import ESP_HEADER_LEN, DfCtl, ElsCode, EspHeader, FcType, FrameHeader, RCtl, wwn_str
from edifd.fc.frame import FC_HEADER_LEN
from edifd.fc.pcap import PcapError, read_records
from edifd.secapp.config import IkePolicy, PeerPolicy, PskCredentials, SecConfig
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer

from .capture import (
    LoopbackCapture,
    RogueReader,
    channel_headers,
    esp_samples,
    key_search,
    login_refused,
    tcp_streams,
)
from .errors import LabError
from .examples import derive, dumps, example
from .guest.host_edif import CHAP_SECRET, CHAP_USER, CTL_IQNS, EDIF_VM_IQN, I_WWPNS
from .guest.host_tenant import MIB, chunk
from .guestrun import collect, guest_python, guest_vm
from .image import GuestImage
from .vm import Drive, HostFwd, IscsiLogin, free_port

T_WWPNS = (0x2100001B32000E01, 0x2100001B32000E02)  # above the initiators' (they answer PLOGI)
REKEY_LIFETIME = 10  # s: the agent's minimum, so several rekeys happen during the tenant I/O
IO_TIMEOUT = 300  # s: edifd's HBA io_timeout; also bounds the start (target A must be secured by then)
SAMPLE_LEN = 32
CTL_BLOCKS = (32 << 20) // 512  # VM-H's control LUNs (lab.guest.host_edif): 32 MiB of 512-byte blocks

# A linktype-225 record: SOF ordered set | FC header | data field | CRC | EOF ordered set.
_SOF_LEN, _TRAILER_LEN = 4, 8  # the SOF before the header; CRC + EOF after the data field
PAYLOAD = _SOF_LEN + FC_HEADER_LEN
_FCP, _ELS = int(FcType.FCP), int(FcType.ELS)
_DF_ESP = int(DfCtl.ESP)
_ELS_AUTH, _ELS_LOGO = int(ElsCode.AUTH_ELS), int(ElsCode.LOGO)


def pattern_samples(mib: int, n: int = 16) -> list[bytes]:
    """`n` SAMPLE_LEN-byte pieces of the tenant pattern, from MiBs spread over the run, unaligned."""
    out = []
    for k in range(n):
        i = (k * max(mib, 1)) // n
        off = (k * 4099 + 7) % (MIB - SAMPLE_LEN)
        out.append(chunk(i)[off: off + SAMPLE_LEN])
    return out


def check_trace(frames: Iterable[bytes], samples: Iterable[bytes] = ()) -> dict[str, Any]:
    """Counts behind the trace claims: ESP on every FCP frame and on nothing else, no data in clear."""
    r = {"frames": 0, "fcp": 0, "fcp_esp": 0, "fcp_cmnd": 0, "other": 0, "other_esp": 0, "auth_els": 0,
         "logo": 0, "short": 0, "pattern_hits": 0}
    blob = bytearray()
    for f in frames:
        r["frames"] += 1
        if len(f) < PAYLOAD + _TRAILER_LEN:
            r["short"] += 1
            continue
        blob += f
        h = FrameHeader.unpack(f[_SOF_LEN:PAYLOAD])
        esp = bool(h.df_ctl & _DF_ESP)
        if h.type == _FCP:
            r["fcp"] += 1
            # The ESP_Header (SPI, sequence number) opens the data field; SPI 0 is reserved (RFC 4303 §2.1).
            if (esp and len(f) >= PAYLOAD + ESP_HEADER_LEN + _TRAILER_LEN
                    and EspHeader.unpack(f[PAYLOAD:]).spi != 0):
                r["fcp_esp"] += 1
            if h.r_ctl == RCtl.FCP_CMND:
                r["fcp_cmnd"] += 1
        else:
            r["other"] += 1
            r["other_esp"] += esp
            if h.type == _ELS and (h.r_ctl & 0xF0) == 0x20:  # ELS request or reply
                r["auth_els"] += f[PAYLOAD] == _ELS_AUTH
                r["logo"] += f[PAYLOAD] == _ELS_LOGO
    data = bytes(blob)
    r["pattern_hits"] = sum(data.count(s) for s in samples)
    return r


def _target(status: dict[str, Any] | None, wwpn: int) -> dict[str, Any]:
    return (((status or {}).get("app") or {}).get("targets") or {}).get(wwn_str(wwpn)) or {}


def _engine(status: dict[str, Any] | None, ctl: str) -> dict[str, Any]:
    return ((status or {}).get("engines") or {}).get(ctl) or {}


def _rekeys(status: dict[str, Any] | None) -> int:
    return int((_engine(status, "ctl0").get("esp") or {}).get("rekeys") or 0)


Verdict = tuple[str, bool, str]


def verdicts(s: dict[str, Any]) -> list[Verdict]:
    """One (claim, passed, detail) per claim of the EDIF scenario; missing data fails its claim."""
    h, vs = s.get("vm_h") or {}, s.get("vm_s") or {}
    out: list[Verdict] = []
    started = s.get("agents_started_s") is not None and not any(k.startswith("early_exit") for k in vs)
    out.append(("EDIF: edif-agent security service started", started,
                f"2 agents up after {s.get('agents_started_s')} s"))
    a_agent = _target(s.get("agent_p0_secured"), T_WWPNS[0])
    b_agent = _target(s.get("agent_p1_secured"), T_WWPNS[1])
    e_a = _engine(h.get("status_secured") or s.get("edifd_status_secured"), "ctl0")
    a_ok = (a_agent.get("state") == "secure" and e_a.get("auth") == "AUTHENTICATED"
            and e_a.get("session") == "ready" and (e_a.get("counters") or {}).get("auth_ok", 0) >= 1)
    out.append(("EDIF: target A secured (AUTH_OK)", a_ok,
                f"agent {a_agent.get('state')}, edifd {e_a.get('auth')}/{e_a.get('session')}, "
                f"after {s.get('secured_s')} s"))
    # After AUTH_FAIL edifd logs B out (its login, and so its auth state, is gone): count, don't look.
    eb = _engine(h.get("status_after_io") or s.get("edifd_status_secured"), "ctl1").get("counters") or {}
    tb, trb = s.get("target_b") or {}, s.get("trace_b") or {}
    b_ok = (b_agent.get("state") == "failed" and eb.get("auth_fail", 0) >= 1 and eb.get("auth_ok") == 0
            and eb.get("sa_updates") == 0 and tb.get("commands") == 0 and trb.get("fcp_cmnd") == 0
            and trb.get("auth_els", 0) > 0 and tb.get("auth_failed", 0) >= 1)
    out.append(("EDIF: wrong PSK at B -> AUTH_FAIL, unusable", b_ok,
                f"agent {b_agent.get('state')}, edifd auth_fail {eb.get('auth_fail')} "
                f"auth_ok {eb.get('auth_ok')} "
                f"SA_UPDATEs {eb.get('sa_updates')}, target auth_failed {tb.get('auth_failed')}, "
                f"FCP_CMND at B {tb.get('commands')} (trace {trb.get('fcp_cmnd')})"))
    io = h.get("io") or {}
    mib = s.get("mib")
    io_ok = (bool(io) and io.get("mib") == mib and not io.get("write_errors") and not io.get("read_errors")
             and not io.get("mismatched_mib"))
    out.append((f"EDIF: tenant {mib} MiB via ESP, read back", io_ok,
                f"{io.get('write_MBps')}/{io.get('read_MBps')} MB/s w/r, "
                f"{len(io.get('write_errors') or []) + len(io.get('read_errors') or [])} errors, "
                f"{len(io.get('mismatched_mib') or [])} MiB mismatched"))
    rk = s.get("rekeys_during_io")
    out.append(("EDIF: rekey during I/O, 0 I/O errors", io_ok and isinstance(rk, int) and rk >= 1,
                f"{rk} rekey(s) during the I/O (engine), agent counted {s.get('agent_rekeys')}"))
    out.append(("EDIF: target A backing file matches", s.get("backing_mismatched_mib") == [],
                f"mismatched MiB: {s.get('backing_mismatched_mib')}"))
    t = s.get("trace_a") or {}
    esp_ok = (t.get("fcp", 0) > 0 and t.get("fcp_esp") == t.get("fcp") and t.get("other", 0) > 0
              and t.get("other_esp") == 0 and t.get("auth_els", 0) > 0 and t.get("short") == 0)
    out.append(("EDIF: DF_CTL 0x40 + ESP on every FCP frame", esp_ok,
                f"{t.get('fcp_esp')}/{t.get('fcp')} FCP frames ESP, {t.get('other_esp')}/{t.get('other')} "
                f"ELS/BLS marked, {t.get('auth_els')} AUTH_ELS"))
    out.append(("EDIF: pattern never in clear on the wire",
                 t.get("pattern_hits") == 0 and (s.get("trace_b") or {}).get("pattern_hits") == 0
                 and s.get("samples", 0) > 0,
                f"{s.get('samples')} samples of {SAMPLE_LEN} bytes, hits {t.get('pattern_hits')}"))
    e_stop = _engine(h.get("status_after_stop"), "ctl0")
    counters = e_stop.get("counters") or {}
    rcs = vs.get("agent_rcs")
    logout_ok = (rcs == [0, 0] and (counters.get("app_stops") or 0) >= 1 and e_stop.get("session") != "ready"
                 and (s.get("trace_a") or {}).get("logo", 0) >= 1)
    out.append(("EDIF: agent stop -> sessions logged out", logout_ok,
                f"agent rc {rcs}, edifd app_stops {counters.get('app_stops')}, "
                f"session {e_stop.get('session')}, "
                f"LOGO in trace A: {t.get('logo')}"))
    after = h.get("after_stop") or {}
    fail_ok = after.get("ok") is False and not after.get("hung") and (after.get("s") or 1e9) < 10
    out.append(("EDIF: tenant I/O to A then fails cleanly", fail_ok,
                f"{after.get('errno')} ({after.get('strerror')}) after {after.get('s')} s"))
    c = s.get("capture") or {}
    cap_ok = (c.get("messages_down", 0) > 0 and c.get("sa_updates", 0) > 0
              and c.get("sa_updates_sealed") == c.get("sa_updates") and c.get("esp_frames_tried", 0) > 0
              and c.get("keys_found") == 0 and c.get("frames_decrypted") == 0)
    out.append(("channel: no SA key crosses the iSCSI transport", cap_ok,
                f"{c.get('sa_updates')} SA_UPDATEs in the loopback capture, "
                f"{c.get('sa_updates_sealed')} sealed; "
                f"{c.get('guesses')} key/salt guesses on {c.get('esp_frames_tried')} ESP frames of trace A: "
                f"keys found {c.get('keys_found')}, frames decrypted {c.get('frames_decrypted')}"
                + (f"; {c['error']}" if c.get("error") else "")))
    acc = s.get("iscsi_access") or {}
    refused = {k: (acc.get(k) or {}).get("refused") for k in ("unknown_initiator", "wrong_secret", "no_chap")}
    out.append(("operations: control LUN export is ACL + CHAP", all(v is True for v in refused.values()),
                f"refused: {refused} (VM-S's logins, with the ACL'd name and the secret: the agents' row)"))
    m = h.get("metrics") or {}
    lines = m.get("lines") or []

    def sample(prefix: str) -> float:
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix) and " " in ln)

    esp_frames, ch_msgs = sample("edifd_esp_frames_total"), sample("edifd_channel_messages_total")
    out.append(("operations: edifd's metrics scraped in VM-H", m.get("samples", 0) > 0 and esp_frames > 0
                and ch_msgs > 0,
                f"{m.get('samples')} edifd_* samples: ESP frames {esp_frames:.0f}, channel messages "
                f"{ch_msgs:.0f}, rekeys {sample('edifd_esp_rekeys_total'):.0f}" + (
                    f"; {m['error']}" if m.get("error") else "")))
    sas = h.get("edifctl_sas") or {}
    rows = sas.get("json") if isinstance(sas.get("json"), list) else []
    listed = [sa for row in rows if isinstance(row, dict) for sa in row.get("sas") or []]
    out.append(("operations: edifctl sas --json in VM-H", sas.get("rc") == 0 and bool(listed),
                f"rc {sas.get('rc')}, {len(listed)} SAs listed" + (f"; {sas['error']}" if sas.get("error")
                                                                   else "")))
    r = s.get("rogue") or {}
    # After the agent's clean stop. One agent process against a fresh VM-H: its numbering starts at 0 and its
    # cursor never jumps (a new epoch's base is what it acknowledged itself), so every number up to the
    # cursor must have been handed to its application exactly once (duplicates are dropped and counted
    # apart): lost = cursor - messages handed over. The host's last announced number is shown beside.
    ch = (s.get("agent_p0_final") or {}).get("channel") or {}
    cc = ch.get("channel") or {}
    lost = (ch["cursor"] - cc["messages_in"]
            if isinstance(ch.get("cursor"), int) and isinstance(cc.get("messages_in"), int) else None)
    rogue_ok = (r.get("reads", 0) > 0 and r.get("reads", 0) > r.get("errors", 0) and r.get("messages", 0) > 0
                and r.get("opened_without_epoch_keys") == 0 and lost == 0)
    out.append(("channel: a keyless reader gets ciphertext, 0 lost", rogue_ok,
                f"{r.get('reads')} READs by a second iSCSI session: {r.get('messages')} messages, "
                f"{r.get('sealed')} sealed, {r.get('opened_without_epoch_keys')} readable; agent p0 consumed "
                f"1..{ch.get('cursor')}, handed over {cc.get('messages_in')} (lost {lost}, "
                f"duplicates dropped {cc.get('duplicates')}; host announced {ch.get('host_sequence')})"
                + (f"; {r['first_error'][0]}" if r.get("first_error") else "")))
    return out


def problems(s: dict[str, Any]) -> list[str]:
    out = [f"{name}: {detail}" for name, ok, detail in verdicts(s) if not ok]
    for who in ("vm_h", "vm_s"):
        err = (s.get(who) or {}).get("error")
        if err:
            out.append(f"{who}: {err}")
    if s.get("error"):
        out.append(s["error"])
    return out


# -- the run ---------------------------------------------------------------------------------------------


class TargetPortThread:
    """One edif-target port (TargetServer with one [[port]]) with its own pcap, on its own loop thread."""

    def __init__(self, name: str, wwpn: int, backing: Path, size: int, auth: SecConfig, pcap: Path) -> None:
        self.pcap = pcap
        port = TargetPortConfig(name, wwpn, wwpn - (1 << 56), ("127.0.0.1", 0),
                                (LunConfig(0, str(backing), size),), True, auth)
        self.server = TargetServer(TargetConfig((port,), pcap_path=str(pcap)))
        self.server.start_thread(15)
        self.port = self.server.ports[0].address[1]

    def counters(self) -> dict[str, Any]:
        p = self.server.ports[0]
        sessions = [x.counters.snapshot() for x in p.sessions] + list(p.sessions_closed)
        return {"commands": sum(c.get("commands", 0) for c in sessions), "sessions": len(sessions),
                **(p.edif.counters.snapshot() if p.edif is not None else {})}

    def close(self) -> None:
        self.server.stop_thread(15)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def agent_config(port: int, target_wwpn: int, psk_file: str) -> str:
    """examples/agent.toml (lab.examples) with the lab's values: its PSK target as the one target, the
    lab's key and PSK files, short timers (rekeys during the I/O; B fails once and stays failed)."""
    ex = example("agent.toml")
    psk_target = next(t for t in ex["targets"].values() if "psk_file" in t)
    cfg = derive(ex, drop=("targets", "metrics"), channel_key=f"channel-p{port}.key", keepalive_interval=2.0,
                 keepalive_misses=5, reconnect_delay=1.0, auth_retry_backoff=600.0,
                 rekey=derive(ex.get("rekey", {}), lifetime=REKEY_LIFETIME, bytes=0))
    cfg["targets"] = {f"{target_wwpn:016x}": derive(psk_target, psk_file=psk_file)}
    head = f"# edif-agent for HBA port p{port}: examples/agent.toml with the lab's values (scenario_edif.py)"
    return head + "\n" + dumps(cfg)


def capture_check(captured: bytes, port: int, trace: Path) -> dict[str, Any]:
    """The figures of the loopback capture (lab.capture): messages seen each way, and the key search."""
    if not captured:
        return {"error": "no capture"}
    try:
        streams = tcp_streams(captured, port)
        down, up = channel_headers(streams["to_port"]), channel_headers(streams["from_port"])
        samples = esp_samples(read_records(trace.read_bytes()))
    except (LabError, OSError, PcapError) as e:
        return {"error": str(e)}
    return {"bytes": len(captured), "messages_down": len(down), "messages_up": len(up),
            "sealed_down": sum(1 for h in down if h.epoch and h.type != 0xF0),
            "sealed_up": sum(1 for h in up if h.epoch and h.type != 0xF0),
            **key_search(streams["to_port"], down, samples)}


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _wait(pred: Callable[[], bool], what: str, timeout: float,
          alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        if not alive():
            raise LabError(f"a VM exited while waiting for {what}")
        time.sleep(0.5)


def run_edif_lab(image: GuestImage, workdir: Path, *, mib: int = 64, log: Callable[[str], None] = print,
                 timeout: float = 2400) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    share_h, share_s = workdir / "vm-h", workdir / "vm-s"
    share_h.mkdir(parents=True)
    share_s.mkdir(parents=True)
    t0 = time.monotonic()

    def phase(msg: str) -> None:
        log(f"[{time.monotonic() - t0:7.1f} s] {msg}")

    summary: dict[str, Any] = {"mib": mib, "rekey_lifetime_s": REKEY_LIFETIME, "io_timeout_s": IO_TIMEOUT}
    psk_a, psk_b, psk_b_target = os.urandom(32), os.urandom(32), os.urandom(32)
    for i in (0, 1):
        key = os.urandom(32).hex().encode() + b"\n"
        _write_private(share_h / f"channel-p{i}.key", key)
        _write_private(share_s / f"channel-p{i}.key", key)
    # The control LUNs' export: a node ACL for VM-S's initiator name and one-way CHAP (QEMU's iSCSI
    # initiator has no mutual CHAP). The secret reaches VM-H's edifd through its share, VM-S's QEMU
    # through a 0600 file on this host (a QEMU secret object: never on a command line).
    chap = secrets.token_urlsafe(12)[:16].encode()
    _write_private(share_h / CHAP_SECRET, chap)
    chap_file, wrong_chap = workdir / "chap-vm-s.secret", workdir / "chap-wrong.secret"
    _write_private(chap_file, chap)
    _write_private(wrong_chap, secrets.token_urlsafe(12)[:16].encode())
    del chap
    _write_private(share_s / "psk" / "a", b"hex:" + psk_a.hex().encode())
    _write_private(share_s / "psk" / "b", b"hex:" + psk_b.hex().encode())
    (share_s / "agent-p0.toml").write_text(agent_config(0, T_WWPNS[0], "psk/a"))
    (share_s / "agent-p1.toml").write_text(agent_config(1, T_WWPNS[1], "psk/b"))

    def auth(initiator: str, psk: bytes) -> SecConfig:
        w = int(initiator.replace(":", ""), 16)
        return SecConfig(peers={w: PeerPolicy(w, PskCredentials(psk))}, ike=IkePolicy())

    size = 2 * mib * MIB
    ta = TargetPortThread("A", T_WWPNS[0], workdir / "target-a.img", size, auth(I_WWPNS[0], psk_a),
                          workdir / "target-a.pcap")
    tb = TargetPortThread("B", T_WWPNS[1], workdir / "target-b.img", size, auth(I_WWPNS[1], psk_b_target),
                          workdir / "target-b.pcap")
    del psk_a, psk_b, psk_b_target
    iscsi = free_port()
    phase(f"[host] edif-target ports A 127.0.0.1:{ta.port} and B 127.0.0.1:{tb.port} (B's PSK for p1 differs "
          "from the agent's); traces target-a.pcap, target-b.pcap")
    capture: LoopbackCapture | None = None
    rogue: RogueReader | None = None
    try:
        capture = LoopbackCapture(iscsi, workdir / "ctl-iscsi.pcap")
        phase(f"[host] capturing this host's loopback on the control LUNs' iSCSI port {iscsi} "
              "(ctl-iscsi.pcap)")
        vm_h = guest_vm(image, f"edif-h-{os.getpid()}", share_h, guest_python("lab.guest.host_edif"),
                        {"LAB_TARGET_A": f"10.0.2.2:{ta.port}", "LAB_TARGET_B": f"10.0.2.2:{tb.port}",
                         "LAB_WWPN_A": f"{T_WWPNS[0]:016x}", "LAB_WWPN_B": f"{T_WWPNS[1]:016x}",
                         "LAB_MIB": str(mib), "LAB_IO_TIMEOUT": str(IO_TIMEOUT)},
                        hostfwd=[HostFwd(iscsi, 3260)])
        with vm_h:
            phase("[VM-H] booting: edifd with 2 secure HBA ports, 2 control LUNs over iSCSI, tenant LUN on A")
            alive_h = lambda: vm_h.proc is not None and vm_h.proc.poll() is None  # noqa: E731
            _wait(lambda: (share_h / "ctl_ready").exists() or (share_h / "result.json").exists(),
                  "VM-H's control LUNs", timeout, alive_h)
            if not (share_h / "ctl_ready").exists():
                raise LabError(f"VM-H failed: {_read_json(share_h / 'result.json').get('error')}")
            phase("[VM-H] control LUNs exported; edifd waits for target A to be secured")
            portal = f"127.0.0.1:{iscsi}"
            summary["iscsi_access"] = {
                "unknown_initiator": login_refused(portal, CTL_IQNS[0], chap=(CHAP_USER, chap_file),
                                                   initiator="iqn.2026-12.io.edifd.lab:other"),
                "wrong_secret": login_refused(portal, CTL_IQNS[0], initiator=EDIF_VM_IQN,
                                              chap=(CHAP_USER, wrong_chap)),
                "no_chap": login_refused(portal, CTL_IQNS[0], initiator=EDIF_VM_IQN, chap=None)}
            phase(f"[host] control LUN export (ACL + CHAP): {summary['iscsi_access']}")
            vm_s = guest_vm(image, f"edif-s-{os.getpid()}", share_s, guest_python("lab.guest.edifvm_edif"),
                            {"LAB_WWPN_P0": I_WWPNS[0], "LAB_WWPN_P1": I_WWPNS[1]}, net=False, lio=False,
                            drives=[Drive.iscsi(iscsi, CTL_IQNS[0], 0), Drive.iscsi(iscsi, CTL_IQNS[1], 0)],
                            iscsi_login=IscsiLogin(EDIF_VM_IQN, CHAP_USER, chap_file))
            with vm_s:
                phase("[VM-S] booting with both control LUNs (QEMU iSCSI initiator, scsi-block)")
                alive = lambda: alive_h() and vm_s.proc is not None and vm_s.proc.poll() is None  # noqa: E731
                _wait(lambda: (share_s / "agents_started").exists(), "the agents", timeout, alive)
                summary["agents_started_s"] = round(time.monotonic() - t0, 1)
                phase("[VM-S] edif-agent run --config started for ports p0 and p1")
                def agent_state(i: int) -> Any:
                    return _target(_read_json(share_s / f"agent-p{i}.json"), T_WWPNS[i]).get("state")

                _wait(lambda: agent_state(0) == "secure" and agent_state(1) == "failed",
                      "A secure and B failed in the agents' status", timeout, alive)
                summary["agent_p0_secured"] = _read_json(share_s / "agent-p0.json")
                summary["agent_p1_secured"] = _read_json(share_s / "agent-p1.json")
                phase("[VM-S] agent: target A secure, target B AUTH_FAIL (wrong PSK)")
                _wait(lambda: (share_h / "secured").exists(), "edifd ready (tenant LUN attached)", timeout,
                      alive)
                summary["secured_s"] = round(time.monotonic() - t0, 1)
                summary["edifd_status_secured"] = _read_json(share_h / "secured").get("status")
                ag0 = summary["agent_p0_secured"].get("service") or {}
                phase(f"[VM-H] edifd ready: tenant LUN behind A attached; writing {mib} MiB with a "
                      f"{REKEY_LIFETIME} s rekey lifetime")
                # A second process in the EDIF VM: its iSCSI name and CHAP secret, not the channel key.
                rogue = RogueReader(portal, CTL_IQNS[0], CTL_BLOCKS, initiator=EDIF_VM_IQN,
                                    chap=(CHAP_USER, chap_file))
                rogue.start()
                phase("[host] a keyless second iSCSI session (qemu-io) reads p0's control LUN at every "
                      "cursor lane during the I/O")
                last = ""

                def io_done() -> bool:
                    nonlocal last
                    p = _read_json(share_h / "io.json")
                    now = f"{p.get('phase')} {p.get('mib')} MiB"
                    if p and now != last:
                        last = now
                        phase(f"[VM-H] tenant: {now}")
                    return (share_h / "io_done").exists()

                _wait(io_done, "the tenant I/O", timeout, alive)
                rogue.stop()
                summary["agent_p0_after_io"] = a_io = _read_json(share_s / "agent-p0.json")
                summary["agent_rekeys"] = (a_io.get("service") or {}).get("rekeys", 0) - ag0.get("rekeys", 0)
                io = _read_json(share_h / "io_done").get("io") or {}
                phase(f"[VM-H] tenant I/O done: {io.get('write_MBps')}/{io.get('read_MBps')} MB/s w/r, "
                      f"{len(io.get('write_errors') or []) + len(io.get('read_errors') or [])} errors")
                (share_s / "stop_agent").touch()
                phase("[host] SIGTERM to the agents (APP_STOP)")
                _wait(lambda: (share_s / "agents_stopped").exists(), "the agents to stop", 300, alive)
                phase(f"[VM-S] agents stopped: rc {_read_json(share_s / 'agents_stopped').get('rcs')}")
                summary["agent_p0_final"] = _read_json(share_s / "agent-p0.json")
                (share_h / "agent_stopped").touch()
                vm_s.wait_exit(300)
                s_run = collect(vm_s)
            vm_h.wait_exit(600)
            h_run = collect(vm_h)
        summary["vm_s"], summary["vm_s_rc"] = s_run.result, s_run.rc
        summary["vm_h"] = {k: v for k, v in h_run.result.items()}
        summary["vm_h_rc"] = h_run.rc
        after = summary["vm_h"].get("after_stop") or {}
        phase(f"[VM-H] tenant I/O after the agent stopped: {after}")
    except LabError as e:
        summary["error"] = str(e)
        phase(f"error: {e}")
    finally:
        summary["target_a"], summary["target_b"] = ta.counters(), tb.counters()
        ta.close()
        tb.close()
        if rogue is not None:
            rogue.stop()
            summary["rogue"] = rogue.summary(bytes.fromhex((share_h / "channel-p0.key").read_text().strip()))
        captured = capture.stop() if capture is not None else b""
    h = summary.get("vm_h") or {}
    summary["rekeys_during_io"] = (_rekeys(h.get("status_after_io")) - _rekeys(h.get("status_secured"))
                                   if h.get("status_after_io") else None)
    with open(workdir / "target-a.img", "rb") as f:
        summary["backing_mismatched_mib"] = [i for i in range(mib) if f.read(MIB) != chunk(i)]
    samples = pattern_samples(mib)
    summary["samples"] = len(samples)
    for name in ("a", "b"):
        try:
            frames = read_records((workdir / f"target-{name}.pcap").read_bytes())
            summary[f"trace_{name}"] = check_trace(frames, samples)
        except (OSError, PcapError) as e:
            summary[f"trace_{name}"] = {"error": str(e)}
    summary["capture"] = capture_check(captured, iscsi, workdir / "target-a.pcap")
    phase(f"[host] loopback capture: {summary['capture']}")
    if "rogue" in summary:
        phase(f"[host] keyless reader: {summary['rogue']}")
    phase(f"[host] trace A: {summary['trace_a']}")
    phase(f"[host] trace B: {summary['trace_b']}; target B: {summary['target_b']}")
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["problems"] = problems(summary)
    return summary
