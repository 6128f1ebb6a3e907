"""``python3 -m lab build | up | down | status | probe | scenario | smoke``

Run as root on a Debian/Ubuntu x86-64 host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import LabError
from .vm import PROJECT_ROOT


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_build(a: argparse.Namespace) -> int:
    from .image import ensure_image

    t = time.monotonic()
    img = ensure_image(log=_log)
    print(
        json.dumps(
            {
                "image": str(img.root),
                "kernel": img.kernel_version,
                "key": img.key,
                "seconds": round(time.monotonic() - t, 1),
            },
            indent=2,
        )
    )
    return 0


def cmd_up(a: argparse.Namespace) -> int:
    from .control import up

    ep = up(backend=a.backend, port=a.port, iqn=a.iqn, timeout=a.timeout, log=_log)
    _log(f"lab up: {ep['url']} (ready after {ep['ready_s']}s)")
    _log(f"endpoints: {Path(ep['share']).parent / 'endpoints.json'}")
    print(ep["iqn"])
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    from .control import down

    res = down(timeout=a.timeout, log=_log)
    _log("lab down: " + ("stopped" if res["was_up"] else "was not up") + f"; no lab QEMU left ({res})")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from .control import status

    st = status()
    print(json.dumps(st, indent=2))
    return 0 if st["up"] else 3


def cmd_probe(a: argparse.Namespace) -> int:
    """One boot running lab.guest.probe; prints result.json. Handy to check a fresh image by hand."""
    from .control import run_dir
    from .guestrun import guest_python, run_guest
    from .image import ensure_image

    img = ensure_image(log=_log)
    share = run_dir("probe")
    run = run_guest(img, f"probe-{os.getpid()}", share, guest_python("lab.guest.probe"), timeout=a.timeout)
    print(json.dumps({"wall_s": run.wall_s, "rc": run.rc, "markers": run.markers, **run.result}, indent=2))
    return 0 if run.rc == 0 else 1


def cmd_scenario(a: argparse.Namespace) -> int:
    """The main job: edifd on a real kernel in VM-H, used from VM-H, the host and VM-S (lab.scenario_luns).

    Prints each phase as it happens, then a table; writes lab/out/summary.json; exit 1 on any problem."""
    from .control import run_dir
    from .image import ensure_image
    from .scenario_luns import run_edifd_lab, verdicts

    t0 = time.monotonic()
    print("== building or finding the cached guest image (Debian kernel + debootstrap root)", flush=True)
    img = ensure_image(log=lambda m: print(m, flush=True))
    print(f"== guest image ready after {time.monotonic() - t0:.0f} s; running the edifd scenario", flush=True)
    res = run_edifd_lab(img, run_dir("scenario"), timeout=a.timeout, log=lambda m: print(m, flush=True))
    print("\n== tenant data path: edif-target on this host, edifd's software HBA in VM-H", flush=True)
    from .scenario_tenant import run_tenant_lab

    tenant = run_tenant_lab(img, run_dir("tenant"), mib=64, log=lambda m: print(m, flush=True))
    res["tenant"] = tenant
    res["problems"] = res["problems"] + [f"tenant: {p}" for p in tenant["problems"]]
    print("\n== EDIF: edif-agent in VM-S secures edifd's HBA ports in VM-H against edif-target on this host",
          flush=True)
    from .scenario_edif import run_edif_lab
    from .scenario_edif import verdicts as edif_verdicts

    edif = run_edif_lab(img, run_dir("edif"), mib=64, log=lambda m: print(m, flush=True))
    res["edif"] = edif
    res["problems"] = res["problems"] + [f"edif: {p}" for p in edif["problems"]]
    out = PROJECT_ROOT / "lab" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print("\n== summary (full details in lab/out/summary.json)")
    for name, ok, detail in verdicts(res):
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<44} {detail}")
    io = tenant.get("guest", {}).get("io") or {}
    what = "tenant 64 MiB via HBA, FC link reset midway"
    print(f"  {'PASS' if not tenant['problems'] else 'FAIL'}  {what:<44} "
          f"{io.get('write_MBps')}/{io.get('read_MBps')} MB/s w/r, backing file exact: "
          f"{tenant.get('backing_sha256_ok')}")
    for name, ok, detail in edif_verdicts(edif):
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<44} {detail}")
    print(f"  total {time.monotonic() - t0:.0f} s")
    for p in res["problems"]:
        _err(f"lab scenario: {p}")
    return 1 if res["problems"] else 0


def cmd_edif(a: argparse.Namespace) -> int:
    """Only the EDIF phases of the scenario (lab.scenario_edif); summary in lab/out/edif-summary.json."""
    from .control import run_dir
    from .image import ensure_image
    from .scenario_edif import run_edif_lab, verdicts

    img = ensure_image(log=_log)
    res = run_edif_lab(img, run_dir("edif"), mib=a.mib, log=lambda m: print(m, flush=True))
    out = PROJECT_ROOT / "lab" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "edif-summary.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    for name, ok, detail in verdicts(res):
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<44} {detail}")
    for p in res["problems"]:
        _err(f"lab edif: {p}")
    return 1 if res["problems"] else 0


def cmd_channel(a: argparse.Namespace) -> int:
    """The control channel lab (lab.scenario_channel): edif-agent in VM-S over the iSCSI-mapped control
    LUN."""
    from .control import run_dir
    from .image import ensure_image
    from .scenario_channel import problems, run_channel_lab

    img = ensure_image(log=_log)
    res = run_channel_lab(img, run_dir("channel"), log=lambda m: print(m, flush=True))
    out = PROJECT_ROOT / "lab" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "channel-summary.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    found = problems(res)
    for p in found:
        _err(f"lab channel: {p}")
    return 1 if found else 0


def cmd_smoke(a: argparse.Namespace) -> int:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "lab",
        "--durations=0",
        str(PROJECT_ROOT / "tests/lab"),
    ]
    return subprocess.call(argv, cwd=PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    from .guest.host_iscsi import DEFAULT_IQN

    p = argparse.ArgumentParser(prog="python3 -m lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or find cached) the guest image").set_defaults(fn=cmd_build)
    u = sub.add_parser("up", help="start VM-H in the background with its iSCSI export on 127.0.0.1:PORT")
    u.add_argument(
        "--backend",
        choices=("fileio", "edifd"),
        default="edifd",
        help="fileio: a LIO fileio LUN (plumbing only); edifd: python3 -m edifd run in the guest",
    )
    u.add_argument("--port", type=int, default=3260)
    u.add_argument("--iqn", default=DEFAULT_IQN)
    u.add_argument("--timeout", type=float, default=300, help="seconds to wait for the guest's ready file")
    u.set_defaults(fn=cmd_up)
    d = sub.add_parser("down", help="stop VM-H; verifies that no lab QEMU is left")
    d.add_argument("--timeout", type=float, default=60)
    d.set_defaults(fn=cmd_down)
    sub.add_parser("status", help="JSON status; exit 0 if up, 3 if not").set_defaults(fn=cmd_status)
    pr = sub.add_parser("probe", help="boot once, print what the guest offers (kernel, LIO, packages)")
    pr.add_argument("--timeout", type=float, default=180)
    pr.set_defaults(fn=cmd_probe)
    sc = sub.add_parser("scenario", help="the main job: edifd in VM-H, used over tcm_loop, iSCSI, from VM-S")
    sc.add_argument("--timeout", type=float, default=600)
    sc.set_defaults(fn=cmd_scenario)
    ed = sub.add_parser("edif", help="only the EDIF phases: agent in VM-S, edifd in VM-H, edif-target here")
    ed.add_argument("--mib", type=int, default=64)
    ed.set_defaults(fn=cmd_edif)
    ch = sub.add_parser("channel", help="the control channel: edif-agent ping/faults in VM-S via iSCSI")
    ch.set_defaults(fn=cmd_channel)
    sub.add_parser("smoke", help="run the lab smoke tests (pytest -m lab tests/lab)").set_defaults(
        fn=cmd_smoke
    )
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except LabError as e:
        _err(f"lab {a.cmd}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
