"""Fast tests of the lab tooling without booting anything: QEMU is replaced by fake_qemu.py, apt/debootstrap
by monkeypatched helpers. They prove the VM lifecycle guarantees (always stopped, timeouts with the console
tail), the scenario protocol and the cache rules (key changes, atomic dirs, the lock)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab.image as image_mod
from lab.config import edifd_lab_config
from lab.errors import LabError, LabTimeout
from lab.guest.edifvm_iscsi import parse_sg_inq, pattern
from lab.guestrun import collect, guest_python, guest_shell, guest_vm, run_guest, run_sh
from lab.image import GuestImage
from lab.vm import VM, Drive, HostFwd, free_port, pids_with_tag

HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes. It may also vanish right now.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the state follows "(comm)", which may hold spaces


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "qemu-system-x86_64"
    exe.write_text(f"#!{sys.executable}\n" + (HERE / "fake_qemu.py").read_text())
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return exe


@pytest.fixture
def image(tmp_path: Path) -> GuestImage:
    root = tmp_path / "img"
    root.mkdir()
    for f in ("vmlinuz", "initrd.gz", "root.img"):
        (root / f).write_bytes(b"")
    return GuestImage(root, root / "vmlinuz", root / "initrd.gz", root / "root.img", "6.1.0-test", "k")


def _vm(image: GuestImage, tmp_path: Path, name: str, **kw: object) -> VM:
    return guest_vm(image, f"u-{name}-{os.getpid()}", tmp_path / name, guest_python("lab.guest.probe"), **kw)


# -- QEMU command line ---------------------------------------


def test_argv_has_tcg_shares_forwards_and_scsi_block(image: GuestImage, tmp_path: Path) -> None:
    vm = VM(
        "a", image, tmp_path / "s", hostfwd=[HostFwd(13260, 3260)], drives=[Drive.iscsi(13260, "iqn.x:y", 0)]
    )
    a = vm.argv()
    joined = " ".join(a)
    assert a[a.index("-accel") + 1] == "tcg"
    assert f"local,path={vm.src},mount_tag=src,security_model=none,readonly=on" in a
    assert f"local,path={tmp_path / 's'},mount_tag=lab,security_model=none" in a
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:13260-:3260" in a
    assert "virtio-scsi-pci,id=scsi0" in a
    assert "file=iscsi://127.0.0.1:13260/iqn.x:y/0,format=raw,if=none,id=x0,cache=none" in a
    assert "scsi-block,drive=x0,bus=scsi0.0" in a
    assert f"file={image.rootfs},if=virtio,format=raw,snapshot=on" in a
    assert "-no-reboot" in a and "panic=-1" in joined


def test_argv_without_net_or_drives(image: GuestImage, tmp_path: Path) -> None:
    a = VM("b", image, tmp_path / "s", net=False, lio=False).argv()
    assert "-netdev" not in a and "virtio-scsi-pci,id=scsi0" not in a
    assert "lab.lio=0" in a[a.index("-append") + 1]
    assert "lab.lio=1" in VM("c", image, tmp_path / "s").argv()[a.index("-append") + 1]


def test_free_port_is_bindable() -> None:
    import socket

    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
    assert 0 < p < 65536


# -- run.sh and results ---------------------------------------


def test_run_sh_quotes_env_and_command() -> None:
    text = run_sh(guest_shell("serve.sh", "a b"), {"LAB_X": "it's $HOME"})
    assert "export PYTHONPATH=/src" in text
    assert "export LAB_X='it'\"'\"'s $HOME'" in text
    assert text.rstrip().endswith("exec /bin/sh /src/lab/guest/serve.sh 'a b'")
    out = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr


@settings(max_examples=40, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_run_sh_env_values_reach_the_command_unchanged(value: str) -> None:
    text = run_sh(["printenv", "LAB_V"], {"LAB_V": value})
    out = subprocess.run(["sh", "-c", text], capture_output=True)
    assert out.stdout == value.encode() + b"\n"


def test_run_sh_rejects_bad_env_name() -> None:
    with pytest.raises(LabError):
        run_sh(["true"], {"A-B": "1"})


def test_run_guest_collects_result_rc_markers(fake_qemu: Path, image: GuestImage, tmp_path: Path) -> None:
    run = run_guest(
        image, f"u-run-{os.getpid()}", tmp_path / "r", guest_python("lab.guest.probe"), {"K": "v"}
    )
    assert run.rc == 0 and run.qemu_rc == 0
    assert run.result["answer"] == 42
    assert "exec python3 -m lab.guest.probe" in run.result["run_sh"]
    assert [t for t, _ in run.markers] == ["booted", "run.sh rc=0", "DONE"]
    assert run.uptime("booted") == 1.25
    assert run.wall_s is not None and run.wall_s > 0
    assert run.check() is run


def test_failed_guest_script_is_reported(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_RC", "3")
    run = run_guest(image, f"u-fail-{os.getpid()}", tmp_path / "f", ["false"])
    assert run.rc == 3
    with pytest.raises(LabError, match="guest output"):
        run.check()


# -- VM lifecycle ---------------------------------------


def test_serve_ready_stop_exit(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "serve")
    with _vm(image, tmp_path, "serve") as vm:
        assert vm.wait_file("ready", 20).read_text() == "ready\n"
        assert vm.wait_marker(r"^booted$", 20)[0] == "booted"
        assert vm.alive()
        vm.request_stop()
        assert vm.wait_exit(20) == 0
        assert collect(vm).rc == 0
    assert not vm.alive()


def test_context_exit_kills_qemu(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "hang")
    with _vm(image, tmp_path, "ctx") as vm:
        vm.wait_marker("booted", 20)
        assert vm.proc is not None
        pid = vm.proc.pid
        assert pid in pids_with_tag(vm.tag)
    assert not _alive(pid)
    assert pids_with_tag(vm.tag) == []


def test_marker_timeout_raises_with_console_tail_and_kills(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "hang")
    vm = _vm(image, tmp_path, "to").start()
    vm.wait_marker("booted", 20)
    with pytest.raises(LabTimeout) as ei:
        vm.wait_marker("never", 0.5)
    msg = str(ei.value)
    assert "waiting for marker /never/" in msg and "LAB: booted" in msg
    assert not vm.alive()


def test_exit_timeout_raises_and_kills(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "hang")
    vm = _vm(image, tmp_path, "ex").start()
    vm.wait_marker("booted", 20)
    with pytest.raises(LabTimeout, match="did not power off"):
        vm.wait_exit(0.3)
    assert not vm.alive()


def test_qemu_failure_surfaces_its_stderr(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "crash")
    with _vm(image, tmp_path, "crash") as vm, pytest.raises(LabError, match="could not connect") as ei:
        vm.wait_file("ready", 20)
    assert "exited rc=1" in str(ei.value)


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from lab.image import GuestImage
    from lab.guestrun import guest_vm
    from pathlib import Path
    r = Path({img!r})
    img = GuestImage(r, r / "vmlinuz", r / "initrd.gz", r / "root.img", "6.1.0-test", "k")
    vm = guest_vm(img, {name!r}, Path({share!r}), ["true"], detached={detached}).start()
    vm.wait_marker("booted", 20)
    print(vm.proc.pid, flush=True)
    {after}
    """
)


def _child(
    tmp_path: Path, image: GuestImage, name: str, after: str, detached: bool = False
) -> tuple[object, int]:
    code = _CHILD.format(
        root=str(HERE.parents[1]), img=str(image.root), name=name, share=str(tmp_path / name),
        detached=detached, after=after,
    )  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None
    return p, int(p.stdout.readline())


def _wait_dead(pid: int, limit: float = 20) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "how", ["normal exit (atexit)", "SIGTERM", "SIGINT", "SIGKILL (pdeathsig)"]
)  # fmt: skip
def test_parent_end_always_stops_qemu(
    how: str, fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "hang")
    # The normal-exit child waits for its stdin to close, so it cannot stop QEMU before we saw it alive.
    after = "sys.stdin.read(); sys.exit(0)" if how.startswith("normal") else "time.sleep(60)"
    p, qpid = _child(tmp_path, image, f"u-par-{os.getpid()}", after)
    assert _alive(qpid)
    p.stdin.close()  # type: ignore[attr-defined]
    sig = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL (pdeathsig)": signal.SIGKILL}.get(how)
    if sig is not None:
        p.send_signal(sig)  # type: ignore[attr-defined]
    p.wait(timeout=20)  # type: ignore[attr-defined]
    assert _wait_dead(qpid), f"QEMU stand-in {qpid} survived its parent ({how})"


def test_detached_vm_survives_parent(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU", "hang")
    p, qpid = _child(tmp_path, image, f"u-det-{os.getpid()}", "vm.detach(); sys.exit(0)", detached=True)
    try:
        p.wait(timeout=20)  # type: ignore[attr-defined]
        assert _alive(qpid)
    finally:
        os.kill(qpid, signal.SIGKILL)
    assert _wait_dead(qpid)


def test_up_status_down_with_fake_qemu(
    fake_qemu: Path, image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lab.control as control

    monkeypatch.setenv("FAKE_QEMU", "serve")
    monkeypatch.setenv("EDIF_LAB_OUT", str(tmp_path / "out"))
    monkeypatch.setattr(control, "ensure_image", lambda log: image)
    monkeypatch.setattr(control, "VM_NAME", f"u-up-{os.getpid()}")
    port = free_port()
    ep = control.up(backend="fileio", port=port, iqn="iqn.2003-01.org.x:t", timeout=20, log=lambda s: None)
    try:
        assert ep["url"] == f"iscsi://127.0.0.1:{port}/iqn.2003-01.org.x:t/0"
        assert json.loads((tmp_path / "out/endpoints.json").read_text()) == ep
        st = control.status()
        assert st["up"] is True and st["pid"] == ep["pid"] and st["stray_qemu"] == []
        argv = json.loads((tmp_path / "out" / control.VM_NAME / "argv.json").read_text())
        assert f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:3260" in argv
        assert "/src/lab/guest/serve.sh fileio" in (tmp_path / "out" / control.VM_NAME / "run.sh").read_text()
        with pytest.raises(LabError, match="already up"):
            control.up(backend="fileio", port=free_port(), timeout=5, log=lambda s: None)
    finally:
        res = control.down(timeout=20, log=lambda s: None)
    assert res["was_up"] and res["clean_stop"] and res["remaining"] == []
    assert not _alive(ep["pid"])
    assert control.status()["up"] is False
    assert not (tmp_path / "out/endpoints.json").exists()


def test_up_rejects_unknown_backend_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lab.control as control

    monkeypatch.setenv("EDIF_LAB_OUT", str(tmp_path / "out"))
    with pytest.raises(LabError, match="unknown backend"):
        control.up(backend="tgt", log=lambda s: None)
    assert not (tmp_path / "out").exists()


# -- image cache ---------------------------------------


def test_image_key_follows_every_recipe_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    k0 = image_mod.image_key()
    assert image_mod.image_key() == k0
    monkeypatch.setattr(image_mod, "GUEST_PACKAGES", (*image_mod.GUEST_PACKAGES, "strace"))
    k1 = image_mod.image_key()
    monkeypatch.setattr(image_mod, "GUEST_MODULES", (*image_mod.GUEST_MODULES, "loop"))
    k2 = image_mod.image_key()
    init = tmp_path / "labinit.sh"
    init.write_text(image_mod.LABINIT.read_text() + "\n# changed\n")
    monkeypatch.setattr(image_mod, "LABINIT", init)
    k3 = image_mod.image_key()
    monkeypatch.setattr(image_mod, "BUILD_VERSION", image_mod.BUILD_VERSION + 1)
    k4 = image_mod.image_key()
    assert len({k0, k1, k2, k3, k4}) == 5


def test_base_key_ignores_init_scripts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    b0 = image_mod.base_key()
    init = tmp_path / "labinit.sh"
    init.write_text("changed")
    monkeypatch.setattr(image_mod, "LABINIT", init)
    assert image_mod.base_key() == b0


def test_cached_image_needs_no_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    final = tmp_path / f"image-{image_mod.image_key()}"
    final.mkdir()
    (final / "manifest.json").write_text(json.dumps({"key": "k", "kernel_version": "6.1.0-9-amd64"}))

    def boom(*a: object, **k: object) -> str:
        raise AssertionError(f"ran a command on the cached path: {a}")

    monkeypatch.setattr(image_mod, "_run", boom)
    monkeypatch.setattr(image_mod, "ensure_host_packages", boom)
    monkeypatch.setattr(image_mod, "missing_host_packages", lambda: [])
    logs: list[str] = []
    img = image_mod.ensure_image(log=logs.append, cache=tmp_path)
    assert img.root == final and img.kernel_version == "6.1.0-9-amd64"
    assert any("cached" in line for line in logs)


def test_cached_image_still_installs_missing_host_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    final = tmp_path / f"image-{image_mod.image_key()}"
    final.mkdir()
    (final / "manifest.json").write_text(json.dumps({"key": "k", "kernel_version": "6.1.0-9-amd64"}))
    ran: list[list[str]] = []
    monkeypatch.setattr(image_mod, "missing_host_packages", lambda: ["qemu-block-extra"] if not ran else [])
    monkeypatch.setattr(image_mod, "_run", lambda argv, **kw: ran.append(argv) or "")
    image_mod.ensure_image(log=lambda s: None, cache=tmp_path)
    assert [a[:2] for a in ran] == [["apt-get", "update"], ["apt-get", "install"]]
    assert ran[1][-1] == "qemu-block-extra"


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "image-x"
    with pytest.raises(RuntimeError), image_mod._atomic_dir(final) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with image_mod._atomic_dir(final) as tmp:
        (tmp / "whole").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["image-x"]
    assert (final / "whole").exists()


def test_cache_lock_is_exclusive(tmp_path: Path) -> None:
    log = image_mod.StepLog(lambda s: None)
    with image_mod._locked(tmp_path, log), open(tmp_path / ".lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / ".lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the block


def test_prune_keeps_newest_and_current(tmp_path: Path) -> None:
    for i, name in enumerate(["image-a", "image-b", "image-c", "image-d", "base-x"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    image_mod._prune(tmp_path, "image-", 3, tmp_path / "image-a")  # the oldest is the one in use
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-x", "image-a", "image-c", "image-d"]


def test_failed_build_command_reports_output_tail() -> None:
    with pytest.raises(LabError, match="rc=3") as ei:
        image_mod._run(["sh", "-c", "echo the-reason >&2; exit 3"])
    assert "the-reason" in str(ei.value)


# -- guest-side helpers and config ---------------------------------------


def test_parse_sg_inq() -> None:
    text = (
        "standard INQUIRY:\n  PQual=0  PDT=0  RMB=0\n Vendor identification: LIO-ORG \n"
        " Product identification: FILEIO          \n Product revision level: 4.0\n"
        "VPD INQUIRY: Unit serial number page\n  Unit serial number: 81938682-19d6-45e4\n"
    )
    assert parse_sg_inq(text) == {
        "vendor": "LIO-ORG", "product": "FILEIO", "revision": "4.0", "serial": "81938682-19d6-45e4",
    }  # fmt: skip


def test_io_pattern_is_reproducible_and_seeded() -> None:
    assert pattern(7) == pattern(7) and pattern(7) != pattern(8) and len(pattern(1)) == 1 << 20


def test_edifd_lab_config_is_toml_and_validates() -> None:
    import tomllib

    cfg = tomllib.loads(edifd_lab_config(iqn="iqn.2003-01.org.x:y", portal_port=3261))
    assert cfg["lun"][0]["export"] == {
        "fabric": "iscsi", "iqn": "iqn.2003-01.org.x:y", "portal": "0.0.0.0:3261", "demo_mode": True,
        "insecure_demo": True,
    }  # fmt: skip
    for bad in ({"iqn": "nope"}, {"iqn": 'iqn.2003-01.a:b"c'}, {"iqn": "iqn.2003-01.a", "lun": 1}):
        with pytest.raises(ValueError):
            edifd_lab_config(**bad)  # type: ignore[arg-type]


def test_edifd_lab_config_is_accepted_by_edifd() -> None:
    import tomllib

    from edifd.config import parse_config

    cfg = parse_config(tomllib.loads(edifd_lab_config(iqn="iqn.2003-01.org.linux-iscsi.edifd-lab:vm-h")))
    (lun,) = cfg.luns
    assert lun.export.fabric == "iscsi" and lun.export.demo_mode is True
    assert lun.export.iqn == "iqn.2003-01.org.linux-iscsi.edifd-lab:vm-h"
    assert lun.export.portal == ("0.0.0.0", 3260)


# -- the debootstrap mirror from the machine's apt configuration ---------------------------------------


def test_apt_mirror_is_the_first_debian_main_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.apt_sources import apt_mirror, deb822_uris, one_line_uris

    one_line = textwrap.dedent("""\
        # deb http://commented.example/debian bookworm main
        deb-src http://src.example/debian bookworm main
        deb [arch=amd64 signed-by=/k.gpg] http://security.example/debian-security bookworm-security main
        deb [ arch=amd64 ] http://archive.example/debian/ bookworm main contrib
        deb http://late.example/debian bookworm main
        """)
    assert list(one_line_uris(one_line)) == ["http://archive.example/debian/", "http://late.example/debian"]
    assert list(one_line_uris("deb http://ubuntu.example/ubuntu noble main\n")) == []
    assert list(one_line_uris("deb http://x.example/debian bookworm contrib\n")) == []
    deb822 = textwrap.dedent("""\
        Types: deb
        URIs: http://off.example/debian
        Suites: bookworm
        Components: main
        Enabled: no

        Types: deb deb-src
        # a comment inside the stanza does not end it
        URIs: http://main.example/debian
        Suites: bookworm bookworm-updates
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        URIs: http://main.example/debian-security
        Suites: bookworm-security
        Components: main
        """)
    assert list(deb822_uris(deb822)) == ["http://main.example/debian"]

    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    assert apt_mirror(etc) is None  # nothing configured: debootstrap gets no mirror argument
    (etc / "sources.list.d" / "b.sources").write_text(deb822)
    (etc / "sources.list.d" / "a.list").write_text("deb http://ubuntu.example/ubuntu noble main\n")
    (etc / "sources.list.d" / "0.list.disabled").write_text("deb http://disabled.example/debian sid main\n")
    assert apt_mirror(etc) == "http://main.example/debian"
    (etc / "sources.list").write_text(one_line)
    assert apt_mirror(etc) == "http://archive.example/debian"  # sources.list first, trailing slash dropped

    # The cache key follows the mirror; EDIF_LAB_MIRROR overrides the apt configuration.
    monkeypatch.setattr(image_mod, "apt_mirror", lambda: None)
    monkeypatch.delenv("EDIF_LAB_MIRROR", raising=False)
    assert image_mod.mirror() is None
    k_default = image_mod.base_key()
    monkeypatch.setattr(image_mod, "apt_mirror", lambda: "http://main.example/debian")
    assert image_mod.mirror() == "http://main.example/debian" and image_mod.base_key() != k_default
    monkeypatch.setenv("EDIF_LAB_MIRROR", "http://override.example/debian")
    assert image_mod.mirror() == "http://override.example/debian"


def test_debootstrap_gets_the_mirror_only_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []

    def record(argv: list[str], **kw: object) -> str:
        ran.append(argv)
        raise LabError("stop here")

    monkeypatch.setattr(image_mod, "_run", record)
    monkeypatch.delenv("EDIF_LAB_MIRROR", raising=False)
    for found in (None, "http://main.example/debian"):
        monkeypatch.setattr(image_mod, "apt_mirror", lambda found=found: found)
        with pytest.raises(LabError):
            image_mod._base_stage(tmp_path / str(found is None), image_mod.StepLog(lambda s: None))
    assert [a[0] for a in ran] == ["debootstrap", "debootstrap"]
    assert ran[0][-1].endswith("/rootfs") and ran[1][-1] == "http://main.example/debian"
