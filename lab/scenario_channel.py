"""The channel lab: edif-agent in VM-S talks to edifd in VM-H over the control LUN, through QEMU's iSCSI
initiator (scsi-block), on real kernels. Two boots; VM-H stays up while VM-S runs every phase.

1. VM-H (``lab.guest.host_channel``): edifd serves ``ctl0`` (control, port WWPN in VPD 0x83) and
   ``data0`` over iSCSI, with the channel key this host generated and put in VM-H's share;
2. VM-S (``lab.guest.edifvm_channel``) maps both LUNs and runs the phases: udev rule, discovery, ping 1000,
   agent SIGKILL mid-stream, edifd SIGKILL mid-stream, wrong-key writer, RTT ratio;
3. this host relays VM-S's requests (edifd status, kill) to VM-H through the two 9p shares, since VM-S
   has no network: ``req-N.json`` in VM-S's share -> ``cmd-N.json`` in VM-H's -> ``done-N.json`` ->
   ``resp-N.json`` back.

The keys are random per run, written mode 0600 into the shares, and never logged or put in a summary.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .guestrun import collect, guest_python, guest_vm
from .image import GuestImage
from .vm import VM, Drive, HostFwd, free_port

CTL_IQN = "iqn.2026-11.io.edifd.lab:ctl0"
DATA_IQN = "iqn.2026-11.io.edifd.lab:data0"
WWPN = "50:01:43:80:12:34:56:78"
ALL_PHASES = ("udev", "status", "ping", "agent_restart", "edifd_kill", "wrong_key", "bench")


def _fresh(d: Path) -> Path:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _write_key(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


class Relay(threading.Thread):
    """Forwards VM-S's requests to VM-H and the answers back (both are 9p shares of this host)."""

    def __init__(self, vm_s: Path, vm_h: Path, log: Callable[[str], None]) -> None:
        super().__init__(daemon=True, name="relay")
        self.vm_s, self.vm_h, self.log = vm_s, vm_h, log
        self.stop = threading.Event()
        self.handled: list[dict[str, Any]] = []

    def run(self) -> None:
        pending: dict[str, float] = {}
        while not self.stop.is_set():
            for req in sorted(self.vm_s.glob("req-*.json")):
                ident = req.stem[len("req-"):]
                try:
                    cmd = json.loads(req.read_text())
                except ValueError:
                    continue
                req.unlink()
                tmp = self.vm_h / f".cmd-{ident}.tmp"
                tmp.write_text(json.dumps(cmd))
                os.replace(tmp, self.vm_h / f"cmd-{ident}.json")
                pending[ident] = time.monotonic()
                if cmd.get("op") != "status":
                    self.log(f"[host] VM-S asks VM-H: {cmd.get('op')}")
            for ident, t0 in list(pending.items()):
                done = self.vm_h / f"done-{ident}.json"
                if done.exists():
                    tmp = self.vm_s / f".resp-{ident}.tmp"
                    shutil.copyfile(done, tmp)
                    os.replace(tmp, self.vm_s / f"resp-{ident}.json")
                    done.unlink()
                    self.handled.append({"id": ident, "s": round(time.monotonic() - t0, 2)})
                    del pending[ident]
            self.stop.wait(0.1)


def run_channel_lab(image: GuestImage, workdir: Path, *, log: Callable[[str], None] = print,
                    count: int = 1000, phases: tuple[str, ...] = ALL_PHASES,
                    timeout: float = 1800) -> dict[str, Any]:
    port = free_port()
    t0 = time.monotonic()
    summary: dict[str, Any] = {"port": port, "count": count, "phases": list(phases)}
    share_h, share_s = _fresh(workdir / "vm-h"), _fresh(workdir / "vm-s")
    key = os.urandom(32)
    _write_key(share_h / "channel.key", key)
    _write_key(share_s / "channel.key", key)
    _write_key(share_s / "wrong.key", os.urandom(32))
    del key

    vm_h = guest_vm(image, f"chan-h-{os.getpid()}", share_h, guest_python("lab.guest.host_channel"),
                    {"LAB_CTL_IQN": CTL_IQN, "LAB_DATA_IQN": DATA_IQN, "LAB_WWPN": WWPN,
                     "LAB_HOLD_S": str(int(timeout))},
                    hostfwd=[HostFwd(port, 3260)])
    with vm_h:
        log(f"[VM-H] booting: edifd will serve ctl0 (control, port {WWPN}) and data0 over iSCSI "
            f"-> 127.0.0.1:{port}")
        vm_h.wait_file("ready", timeout)
        if (share_h / "ready").read_text().strip() != "ready":
            h = collect(vm_h)
            summary["error"] = f"VM-H failed: {h.result.get('error')}"
            summary["vm_h"] = h.result
            log(summary["error"])
            return summary
        log("[VM-H] edifd ready")
        vm_s = guest_vm(image, f"chan-s-{os.getpid()}", share_s, guest_python("lab.guest.edifvm_channel"),
                        {"LAB_COUNT": str(count), "LAB_PHASES": ",".join(phases), "LAB_WWPN": WWPN},
                        net=False, lio=False,
                        drives=[Drive.iscsi(port, CTL_IQN, 0), Drive.iscsi(port, DATA_IQN, 0)])
        relay = Relay(share_s, share_h, log)
        relay.start()
        try:
            s = _run_vm_s(vm_s, timeout, log)
        finally:
            relay.stop.set()
            relay.join(5)
        summary["vm_s_rc"] = s.rc
        summary["vm_s"] = s.result
        summary["relayed"] = relay.handled
        vm_h.request_stop()
        vm_h.wait_exit(300)
        h = collect(vm_h)
    summary["vm_h_rc"] = h.rc
    summary["vm_h"] = {k: v for k, v in h.result.items() if k != "edifd_log_tail"}
    summary["edifd_log_tail"] = h.result.get("edifd_log_tail", "")[-2000:]
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["problems"] = problems(summary)
    _log_summary(summary, log)
    return summary


def _run_vm_s(vm: VM, timeout: float, log: Callable[[str], None]) -> Any:
    log("[VM-S] booting with ctl0 and data0 as scsi-block through QEMU's iSCSI initiator")
    with vm:
        vm.wait_exit(timeout)
        return collect(vm)


def _rep(phase: dict[str, Any] | None) -> dict[str, Any]:
    return (phase or {}).get("report") or {}


def clean(rep: dict[str, Any], count: int) -> bool:
    return (rep.get("sent") == count and rep.get("received") == count and rep.get("lost") == 0
            and rep.get("duplicates") == 0 and rep.get("unexpected") == 0 and rep.get("out_of_order") == 0
            and rep.get("seq_gaps") == 0 and rep.get("seq_repeats") == 0)


def problems(summary: dict[str, Any]) -> list[str]:
    """What is not as it should be; empty when every phase passed."""
    if summary.get("error"):
        return [summary["error"]]
    out: list[str] = []
    s = summary.get("vm_s") or {}
    n = summary.get("count", 0)
    ph = set(summary.get("phases", ()))
    if s.get("error"):
        out.append(f"VM-S: {s['error']}")
    if "udev" in ph:
        u = s.get("udev") or {}
        if (u.get("nomerges"), u.get("read_ahead_kb"), u.get("timeout")) != ("2", "0", "600") or \
                "[none]" not in (u.get("scheduler") or "") or \
                (u.get("properties") or {}).get("UDISKS_IGNORE") != "1":
            out.append(f"udev rule not applied: {u}")
    if "status" in ph:
        st = s.get("status") or {}
        disks = (_rep(st).get("disks") if st.get("report") else None) or []
        if st.get("rc") != 0 or [d.get("port") for d in disks] != [WWPN]:
            out.append(f"edif-agent status: {st}")
    if "ping" in ph:
        p = s.get("ping") or {}
        if p.get("rc") != 0 or not clean(_rep(p), n):
            out.append(f"ping {n}: rc={p.get('rc')} {_brief(_rep(p))} {p.get('stderr', '')[-300:]}")
        elif (p.get("host_delta") or {}).get("messages_in") != n:
            out.append(f"ping {n}: host acted on {(p.get('host_delta') or {}).get('messages_in')} messages")
    if "agent_restart" in ph:
        a = s.get("agent_restart") or {}
        hd = a.get("host_delta") or {}
        r = _rep(a)
        if a.get("rc") != 0 or not clean(r, n):
            out.append(f"agent restart: rc={a.get('rc')} {_brief(r)} {a.get('stderr', '')[-300:]}")
        elif not n <= hd.get("messages_in", 0) <= n + r.get("resent", 0) or hd.get("rejected_replay"):
            out.append(f"agent restart: host side {hd}")
    if "edifd_kill" in ph:
        k = s.get("edifd_kill") or {}
        if k.get("rc") != 0 or not clean(_rep(k), n) or (k.get("kill") or {}).get("error"):
            out.append(f"edifd SIGKILL: rc={k.get('rc')} {_brief(_rep(k))} kill={k.get('kill')} "
                       f"{k.get('stderr', '')[-300:]}")
    if "wrong_key" in ph:
        w = s.get("wrong_key") or {}
        hd = w.get("host_delta_wrong") or {}
        rejected = sum(v for k, v in hd.items() if k.startswith("rejected_"))
        if (w.get("wrong") or {}).get("rc") != 5 or rejected < 1 or hd.get("messages_in") or hd.get("epochs"):
            out.append(f"wrong key: rc={(w.get('wrong') or {}).get('rc')} host delta {hd}")
        if (w.get("good_after") or {}).get("rc") != 0:
            out.append(f"rightful agent after the wrong-key writer: {w.get('good_after')}")
    if summary.get("vm_s_rc") != 0:
        out.append(f"VM-S run rc={summary.get('vm_s_rc')}")
    if summary.get("vm_h_rc") != 0 or (summary.get("vm_h") or {}).get("error"):
        out.append(f"VM-H run rc={summary.get('vm_h_rc')}: {(summary.get('vm_h') or {}).get('error')}")
    return out


def _brief(rep: dict[str, Any]) -> str:
    keys = ("sent", "received", "resent", "in_order", "duplicates", "lost", "unexpected", "seq_gaps",
            "seq_repeats")
    return " ".join(f"{k}={rep.get(k)}" for k in keys)


def _log_summary(summary: dict[str, Any], log: Callable[[str], None]) -> None:
    s = summary.get("vm_s") or {}
    for name in ("ping", "agent_restart", "edifd_kill"):
        if name in s:
            r = _rep(s[name])
            log(f"[VM-S] {name}: rc={s[name].get('rc')} {_brief(r)} rtt_ms={r.get('rtt_ms')}")
    if "wrong_key" in s:
        log(f"[VM-S] wrong key: rc={(s['wrong_key'].get('wrong') or {}).get('rc')} "
            f"host delta {s['wrong_key'].get('host_delta_wrong')}")
    if "bench" in s:
        log(f"[VM-S] bench: {s['bench']}")
    log(f"problems: {summary['problems'] or 'none'} ({summary.get('wall_s')} s)")
