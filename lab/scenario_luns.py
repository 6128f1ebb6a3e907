"""The edifd lab scenario: VM-H runs edifd (LIO + TCMU), the host and VM-S use its LUNs.

Phases (each printed as it happens, and returned in one summary dict):

1. VM-H boots and runs ``lab.guest.host_luns``: edifd serves a tcm_loop LUN, an iSCSI LUN and a control
   LUN; inside VM-H the tcm_loop LUN shows our INQUIRY and survives an O_DIRECT round trip, and edifd is
   SIGKILLed and restarted under a write loop;
2. the host runs ``iscsi-inq`` and libiscsi's ``iscsi-test-cu`` suites against the iSCSI LUN (forwarded port);
3. VM-S maps the LUN with QEMU's iSCSI initiator as ``scsi-block`` and does an O_DIRECT round trip;
4. the host asks VM-H to stop: readers park on the control LUN, edifd gets SIGTERM with them parked, must
   exit within 10 s, and every LIO object is then deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .guest.edifvm_iscsi import IO_LEN, pattern
from .guestrun import collect, guest_python, guest_vm, run_guest
from .image import GuestImage
from .vm import Drive, HostFwd, free_port

IQN = "iqn.2026-11.io.edifd.lab:disk0"
SUITES = (
    "TestUnitReady",
    "Inquiry",
    "ReadCapacity10",
    "ReadCapacity16",
    "Read10",
    "Read16",
    "Write10",
    "Write16",
    "ModeSense6",
    "Verify10",
)
STOP_LIMIT_S = 10.0


def parse_cunit(text: str) -> dict[str, int]:
    """CUnit's 'Run Summary' line for tests: total, ran, passed, failed, inactive."""
    m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
    if not m:
        return {}
    return dict(zip(("total", "ran", "passed", "failed", "inactive"), map(int, m.groups()), strict=True))


def run_test_cu(url: str, suite: str) -> dict[str, Any]:
    t = time.monotonic()
    p = subprocess.run(
        ["iscsi-test-cu", "-d", f"--test=SCSI.{suite}", url],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=600,
    )
    counts = parse_cunit(p.stdout)
    failures = [ln.strip() for ln in p.stdout.splitlines() if re.search(r"FAILED|Test: .*\.\.\.FAILED", ln)]
    return {
        "rc": p.returncode,
        **counts,
        "seconds": round(time.monotonic() - t, 1),
        "failures": failures[:20],
        "tail": p.stdout[-1500:] if not counts or counts.get("failed") else "",
    }


def _fresh(d: Path) -> Path:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def run_edifd_lab(
    image: GuestImage, workdir: Path, *, log: Callable[[str], None] = print, timeout: float = 420
) -> dict[str, Any]:
    port = free_port()
    seed = int.from_bytes(os.urandom(4), "big")
    offset = 3 << 20
    summary: dict[str, Any] = {"iqn": IQN, "port": port, "phases": {}}
    phases = summary["phases"]
    t0 = time.monotonic()

    def phase(name: str, data: dict[str, Any]) -> None:
        phases[name] = {**data, "at_s": round(time.monotonic() - t0, 1)}

    vm_h = guest_vm(
        image,
        f"edifd-h-{os.getpid()}",
        _fresh(workdir / "vm-h"),
        guest_python("lab.guest.host_luns"),
        {"LAB_IQN": IQN, "LAB_HOLD_S": "1200", "LAB_CHECK_OFFSET": str(offset)},
        hostfwd=[HostFwd(port, 3260)],
    )
    with vm_h:
        log(
            f"[VM-H] booting; edifd will serve loop0 (tcm_loop), disk0 (iSCSI -> 127.0.0.1:{port}), "
            "ctl0 (control)"
        )
        vm_h.wait_file("ready", timeout)
        p1 = (
            json.loads((vm_h.share / "phase1.json").read_text())
            if (vm_h.share / "phase1.json").exists()
            else {}
        )
        if (vm_h.share / "ready").read_text().strip() != "ready":
            h = collect(vm_h)
            summary["vm_h"] = h.result
            summary["error"] = f"VM-H failed: {h.result.get('error')}"
            log(summary["error"])
            return summary
        phase("vmh_loopback", {k: p1.get(k) for k in ("start_s", "loop_dev", "loop_inq", "loop_io")})
        log(f"[VM-H] edifd ready in {p1.get('start_s')} s; {p1.get('loop_dev')} INQUIRY {p1.get('loop_inq')}")
        log(f"[VM-H] 1 MiB O_DIRECT round trip on {p1.get('loop_dev')}: {p1.get('loop_io')}")
        phase("kill_restart", p1.get("kill_restart") or {})
        kr = p1.get("kill_restart") or {}
        log(
            f"[VM-H] edifd SIGKILLed under a write loop and restarted in {kr.get('restart_s')} s: "
            f"{kr.get('ops_total')} ops, {len(kr.get('io_errors') or [])} I/O errors, "
            f"{kr.get('mismatches')} mismatches, {kr.get('verify_failures')} of {kr.get('blocks_verified')} "
            f"blocks failed re-verify, longest I/O {kr.get('max_io_latency_s')} s"
        )

        url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
        inq = subprocess.run(["iscsi-inq", url], capture_output=True, text=True, timeout=60)
        phase("host_iscsi_inq", {"rc": inq.returncode, "stdout": inq.stdout, "stderr": inq.stderr[-500:]})
        vend = re.search(r"Vendor:\s*(.*)", inq.stdout)
        prod = re.search(r"Product:\s*(.*)", inq.stdout)
        log(
            f"[host] iscsi-inq {url}: rc={inq.returncode} vendor={vend and vend.group(1).strip()!r} "
            f"product={prod and prod.group(1).strip()!r}"
        )

        suites: dict[str, Any] = {}
        for s in SUITES:
            suites[s] = run_test_cu(url, s)
            r = suites[s]
            log(
                f"[host] iscsi-test-cu SCSI.{s}: {r.get('passed', '?')}/{r.get('ran', '?')} passed"
                f", {r.get('failed', '?')} failed ({r['seconds']} s)"
            )
        phase("iscsi_test_cu", suites)

        log("[VM-S] booting with the LUN as scsi-block through QEMU's iSCSI initiator")
        vm_s = run_guest(
            image,
            f"edifd-s-{os.getpid()}",
            _fresh(workdir / "vm-s"),
            guest_python("lab.guest.edifvm_iscsi"),
            {"LAB_VENDOR": "EDIF", "LAB_IO_OFFSET": str(offset), "LAB_IO_SEED": str(seed)},
            timeout=timeout,
            net=False,
            lio=False,
            drives=[Drive.iscsi(port, IQN, 0)],
        )
        phase(
            "vms_iscsi",
            {
                "rc": vm_s.rc,
                "sg_inq": vm_s.result.get("sg_inq"),
                "io": vm_s.result.get("io"),
                "wall_s": vm_s.wall_s and round(vm_s.wall_s, 1),
            },
        )
        log(f"[VM-S] sees {vm_s.result.get('sg_inq')}; O_DIRECT 1 MiB: {vm_s.result.get('io')}")

        log("[VM-H] readers park on ctl0, then edifd gets SIGTERM")
        vm_h.request_stop()
        vm_h.wait_exit(timeout)
        h = collect(vm_h)
    summary["vm_h_rc"] = h.rc
    summary["vm_h_error"] = h.result.get("error")
    ps = h.result.get("parked_stop") or {}
    phase("parked_stop", ps)
    log(
        f"[VM-H] {ps.get('parked_before_stop')} READs parked; edifd exited rc={ps.get('edifd_rc')} in "
        f"{ps.get('edifd_stop_s')} s; readers {ps.get('readers')}; "
        f"ctl0 deleted in {ps.get('ctl0_delete_s')} s; "
        f"edifd --teardown rc={ps.get('teardown_rc')}, backstores left {ps.get('backstores_left')}"
    )
    expected = __import__("hashlib").sha256(pattern(seed)).hexdigest()
    summary["vms_data_in_backing_file"] = h.result.get("disk0_sha256") == expected
    log(f"[VM-H] disk0 backing file holds what VM-S wrote: {summary['vms_data_in_backing_file']}")
    summary["io_len"] = IO_LEN
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["problems"] = problems(summary)
    return summary


def suite_results(phases: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-suite iscsi-test-cu results (the phase also carries its timestamp)."""
    return {k: v for k, v in (phases.get("iscsi_test_cu") or {}).items() if isinstance(v, dict)}


def problems(summary: dict[str, Any]) -> list[str]:
    """What is not as it should be; empty when every phase passed."""
    out: list[str] = []
    ph = summary.get("phases", {})
    if summary.get("error"):
        return [summary["error"]]
    lb = ph.get("vmh_loopback", {})
    inq = lb.get("loop_inq") or {}
    if (inq.get("vendor"), inq.get("product"), inq.get("serial")) != ("EDIF", "LAB DISK", "EDIFLAB-LOOP0"):
        out.append(f"tcm_loop INQUIRY is not ours: {inq}")
    io = lb.get("loop_io") or {}
    if not (io.get("match") and io.get("backing_match")):
        out.append(f"tcm_loop O_DIRECT round trip failed: {io}")
    kr = ph.get("kill_restart", {})
    if (
        kr.get("io_errors")
        or kr.get("mismatches")
        or kr.get("verify_failures")
        or not kr.get("blocks_verified")
    ):
        out.append(f"SIGKILL/restart under I/O: {kr}")
    hi = ph.get("host_iscsi_inq", {})
    if hi.get("rc") != 0 or "EDIF" not in hi.get("stdout", ""):
        out.append(f"host iscsi-inq does not show EDIF: {hi}")
    for s, r in suite_results(ph).items():
        if not r.get("ran") or r.get("failed") != 0 or r.get("passed") != r.get("ran"):
            out.append(f"iscsi-test-cu SCSI.{s}: {r}")
    vs = ph.get("vms_iscsi", {})
    sinq = vs.get("sg_inq") or {}
    if vs.get("rc") != 0 or (sinq.get("vendor"), sinq.get("product")) != ("EDIF", "LAB DISK"):
        out.append(f"VM-S over iSCSI: {vs}")
    if not summary.get("vms_data_in_backing_file"):
        out.append("the data VM-S wrote is not in disk0's backing file")
    ps = ph.get("parked_stop", {})
    if (
        not ps.get("parked_before_stop")
        or ps.get("readers_stuck") != 0
        or ps.get("edifd_rc") is None
        or (ps.get("edifd_stop_s") or 99) > STOP_LIMIT_S
        or ps.get("backstores_left") != []
        or ps.get("uio_left") != []
        or ps.get("teardown_rc") != 0
    ):
        out.append(f"stop with parked READs: {ps}")
    if summary.get("vm_h_rc") != 0:
        out.append(f"VM-H run rc={summary.get('vm_h_rc')}: {summary.get('vm_h_error')}")
    return out


def verdicts(summary: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """One line per phase for the final table: (what, passed, figures)."""
    ph = summary.get("phases", {})
    probs = summary.get("problems", [])

    def ok(prefix: str) -> bool:
        return not any(p.startswith(prefix) for p in probs)

    lb, kr = ph.get("vmh_loopback", {}), ph.get("kill_restart", {})
    io = lb.get("loop_io") or {}
    suites = suite_results(ph)
    passed = sum(r.get("passed", 0) for r in suites.values())
    ran = sum(r.get("ran", 0) for r in suites.values())
    vs, ps = ph.get("vms_iscsi", {}), ph.get("parked_stop", {})
    return [
        (
            "tcm_loop LUN: our INQUIRY, 1 MiB O_DIRECT",
            ok("tcm_loop"),
            f"{lb.get('loop_dev')} {io.get('write_MBps')}/{io.get('read_MBps')} MB/s w/r",
        ),
        (
            "SIGKILL + restart under a write loop",
            ok("SIGKILL"),
            f"{kr.get('ops_total')} ops, {len(kr.get('io_errors') or [])} errors, "
            f"restart {kr.get('restart_s')} s",
        ),
        ("host iscsi-inq over the forwarded portal", ok("host iscsi-inq"), f"port {summary.get('port')}"),
        ("libiscsi iscsi-test-cu, 10 SCSI suites", ok("iscsi-test-cu"), f"{passed}/{ran} tests passed"),
        (
            "VM-S: scsi-block via QEMU iSCSI, O_DIRECT",
            ok("VM-S") and ok("the data VM-S"),
            f"sees {(vs.get('sg_inq') or {}).get('vendor')}/{(vs.get('sg_inq') or {}).get('product')}",
        ),
        (
            "stop with 4 parked READs, then delete LUNs",
            ok("stop with parked"),
            f"edifd exit {ps.get('edifd_stop_s')} s, readers {ps.get('readers')}",
        ),
    ]
