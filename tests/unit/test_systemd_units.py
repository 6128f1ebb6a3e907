"""The systemd units and the udev rule of systemd/, checked without a running systemd or udev.

* `systemd-analyze security --offline=true` (systemd 252 scores a unit file without loading it into a
  manager, so it works in a container or a microVM whose PID 1 is not systemd): edifd.service at most
  5.0, the agent's instance and edif-target.service at most 3.0 (docs/packaging.md has the figures).
* The units' sandbox around real work: the in-process EDIF stacks of a few test files (edifd's daemon
  with its HBA and a target over TCP, the metrics endpoints of edifd, edif-target and the agent, the
  TCMU ring's AIO edge) run under each unit's SystemCallFilter= (a libseccomp filter built from
  `systemd-analyze syscall-filter`'s groups, refused calls EPERM as SystemCallErrorNumber= says), an
  empty capability bounding set, no_new_privs, and the kernel's MemoryDenyWriteExecute equivalent
  (PR_SET_MDWE, Linux 6.3+).
* What the units promise: no module loading in ExecStartPre (modules-load.d instead), the agent's
  RestartPreventExitStatus= is exactly its "bad configuration or input" exit codes, the instance name
  is the udev name of the disk.
* `edif-agent udev-id` (guest_agent.udev_id) on a fake sysfs holding the VPD page 0x83 edifd's own
  INQUIRY code makes, and 60-edif-control.rules evaluated for a control disk, a control disk without
  a port designator and an ordinary disk by a small evaluator of the udev rule keys the file uses
  (`udevadm test` needs the device in the real /sys, and systemd 252 has no `udevadm verify`).
`systemd-analyze verify` of the units as the packages install them is in test_debian_packages.py.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd.scsi.identity import Identity
from edifd.scsi.inquiry import vpd_page
from guest_agent import exits
from guest_agent.udev_id import format_properties, identify, udev_id
from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
RULE = UNITS / "60-edif-control.rules"
WWPN = 0x2100001B320000A1
WWPN_TEXT = "21:00:00:1b:32:00:00:a1"
LIMITS = {"edifd.service": 5.0, f"edif-agent@{WWPN_TEXT}.service": 3.0, "edif-target.service": 3.0}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value, in order (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        unavailable("systemd-analyze not installed (Debian: systemd)")
    return path


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three units as they are named when they run (the agent's template as one instance)."""
    d = tmp_path_factory.mktemp("units")
    shutil.copy(UNITS / "edifd.service", d / "edifd.service")
    shutil.copy(UNITS / "edif-target.service", d / "edif-target.service")
    shutil.copy(UNITS / "edif-agent@.service", d / f"edif-agent@{WWPN_TEXT}.service")
    return d


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_security_exposure_is_within_its_limit(analyze: str, unit_dir: Path, unit: str) -> None:
    res = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit_dir / unit)],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= LIMITS[unit], res.stdout


# -- the sandbox around real work ------------------------------------------------------------------

# Test files whose tests run real in-process stacks (threads, asyncio, TCP on loopback, AES-GCM, files).
SANDBOX_WORKLOAD = ["tests/unit/test_daemon_remote.py", "tests/unit/test_metrics_http.py",
                    "tests/unit/test_tcmu_aio.py"]


def syscall_groups(analyze: str) -> dict[str, list[str]]:
    out = subprocess.run([analyze, "syscall-filter", "--no-pager"], capture_output=True, text=True,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(groups: dict[str, list[str]], names: list[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= expand(groups, groups[n]) if n.startswith("@") else {n}
    return out


def allowed_syscalls(analyze: str, unit: str) -> set[str]:
    """The calls a unit's SystemCallFilter= lines allow: the allow lists' union less every ~ list."""
    groups = syscall_groups(analyze)
    lines = unit_settings(UNITS / unit)["Service.SystemCallFilter"]
    allow = expand(groups, [w for ln in lines if not ln.startswith("~") for w in ln.split()])
    return allow - expand(groups, [w for ln in lines if ln.startswith("~") for w in ln[1:].split()])


def sandbox(allowed: set[str], error: int):  # noqa: ANN201
    """A preexec_fn: no_new_privs, MDWE where the kernel has it, no capabilities, then the filter."""
    try:
        seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        unavailable("libseccomp.so.2 not installed (Debian: libseccomp2, a dependency of systemd)")
    libc = ctypes.CDLL(None, use_errno=True)
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    resolved = (seccomp.seccomp_syscall_resolve_name(c.encode()) for c in sorted(allowed))
    numbers = [n for n in resolved if n >= 0]  # names this architecture does not have resolve to < 0
    act_allow, act_errno = 0x7FFF0000, 0x00050000 | error  # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(error)
    pr_set_no_new_privs, pr_capbset_drop, pr_set_mdwe, mdwe_refuse_exec_gain = 38, 24, 65, 1

    def pre() -> None:
        if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
            os._exit(120)
        libc.prctl(pr_set_mdwe, mdwe_refuse_exec_gain, 0, 0, 0)  # EINVAL before Linux 6.3: no MDWE
        for cap in range(64):
            libc.prctl(pr_capbset_drop, cap, 0, 0, 0)  # EINVAL past the last capability
        ctx = seccomp.seccomp_init(act_errno)
        if not ctx or any(seccomp.seccomp_rule_add(ctx, act_allow, n, 0) for n in numbers) \
                or seccomp.seccomp_load(ctx) != 0:
            os._exit(121)

    return pre


@pytest.mark.parametrize("unit", ["edifd.service", "edif-agent@.service", "edif-target.service"])
def test_real_work_runs_under_the_units_sandbox(analyze: str, unit: str) -> None:
    s = unit_settings(UNITS / unit)
    error = getattr(errno, s["Service.SystemCallErrorNumber"][0])
    allowed = allowed_syscalls(analyze, unit)
    assert {"mmap", "poll", "ioctl", "read", "write"} <= allowed  # the TCMU ring and SG_IO
    assert not {"chown", "setpriority", "init_module", "mount"} & allowed
    probe = ("import os, mmap\n"
             "try:\n    os.setpriority(os.PRIO_PROCESS, 0, 1)\nexcept PermissionError:\n    pass\n"
             "else:\n    raise SystemExit('setpriority allowed')\n"
             "status = open('/proc/self/status').read()\n"
             "assert 'CapEff:\\t0000000000000000' in status and 'NoNewPrivs:\\t1' in status, status\n")
    res = subprocess.run([sys.executable, "-c", probe], preexec_fn=sandbox(allowed, error),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr  # the filter, the bounding set and no_new_privs are in force
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SANDBOX_WORKLOAD],
                         cwd=ROOT, preexec_fn=sandbox(allowed, error), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_no_unit_loads_kernel_modules() -> None:
    """Modules come from modules-load.d (edif-host.conf); edifd has no CAP_SYS_MODULE to load any."""
    for unit in ("edifd.service", "edif-agent@.service", "edif-target.service"):
        s = unit_settings(UNITS / unit)
        execs = [v for k, vs in s.items() if k.startswith("Service.Exec") for v in vs]
        assert not [e for e in execs if "modprobe" in e], unit
        assert s["Service.CapabilityBoundingSet"] == [""], unit
        assert s["Service.ProtectKernelModules"] == ["yes"], unit
    listed = [ln for ln in (UNITS / "modules-load.d/edif-host.conf").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert listed == ["target_core_user", "tcm_loop", "iscsi_target_mod", "vhost_scsi"]


def test_agent_restarts_except_on_bad_configuration_or_input() -> None:
    s = unit_settings(UNITS / "edif-agent@.service")
    assert s["Service.Restart"] == ["on-failure"]
    prevent = {int(c) for v in s["Service.RestartPreventExitStatus"] for c in v.split()}
    # 2 usage (also no channel key at all), 4 channel key refused, 7 configuration refused.
    assert prevent == {2, exits.EXIT_KEY, exits.EXIT_CONFIG}
    assert not prevent & {exits.EXIT_NO_DISK, exits.EXIT_NOT_ESTABLISHED, exits.EXIT_IO}


def test_edifd_and_target_do_not_restart_on_a_refused_configuration() -> None:
    for unit in ("edifd.service", "edif-target.service"):
        s = unit_settings(UNITS / unit)
        prevent = {int(c) for v in s["Service.RestartPreventExitStatus"] for c in v.split()}
        assert prevent == {2, exits.EXIT_CONFIG}, unit  # 1 (a start that failed) is retried


def test_agent_instance_is_the_port_and_its_disk() -> None:
    s = unit_settings(UNITS / "edif-agent@.service")
    (cmd,) = s["Service.ExecStart"]
    assert cmd.startswith("/usr/bin/edif-agent run --config /etc/edif-agent/agent.toml ")
    assert "--device /dev/edif/%I --port %I " in cmd
    assert s["Unit.BindsTo"] == ["dev-edif-%i.device"]
    assert s["Service.DeviceAllow"] == ["/dev/edif/%I rw"]
    assert s["Service.RuntimeDirectory"] == ["edif-agent/%i"]  # instances do not remove each other's


# -- edif-agent udev-id ------------------------------------------------------------------------------


def fake_disk(sys_root: Path, name: str, *, vendor: str, product: str, port_wwpn: int | None) -> None:
    """/sys/block/NAME as the kernel shows a SCSI disk: INQUIRY strings padded as sysfs pads them and
    the VPD pages edifd's INQUIRY code answers with."""
    ident = Identity(vendor=vendor, product=product, serial="EDIF-CTL0", port_wwpn=port_wwpn)
    dev = sys_root / "block" / name / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor.ljust(8) + "\n")
    (dev / "model").write_text(product.ljust(16) + "\n")
    (dev / "vpd_pg83").write_bytes(vpd_page(0x83, ident, max_transfer_blocks=128))
    (dev / "vpd_pg80").write_bytes(vpd_page(0x80, ident, max_transfer_blocks=128))
    (sys_root / "block" / name / "size").write_text("32768\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    fake_disk(tmp_path, "sdb", vendor="EDIF", product="CTRL", port_wwpn=WWPN)
    fake_disk(tmp_path, "sdc", vendor="EDIF", product="CTRL", port_wwpn=None)
    fake_disk(tmp_path, "sdd", vendor="QEMU", product="QEMU HARDDISK", port_wwpn=None)
    fake_disk(tmp_path, "sde", vendor="EDIF", product="DISK", port_wwpn=WWPN)
    return tmp_path


def run_udev_id(sysfs: Path, *args: str) -> tuple[int, str, str]:
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1 (Debian 12) mixes stderr into stdout otherwise
    except TypeError:
        runner = CliRunner()  # click >= 8.2: always separate
    res = runner.invoke(udev_id, [*args, "--sys-root", str(sysfs)])
    return res.exit_code, res.stdout, res.stderr


def test_udev_id_prints_the_port_of_a_control_disk(sysfs: Path) -> None:
    assert run_udev_id(sysfs, "sdb") == (0, f"EDIF_CONTROL=1\nEDIF_PORT_WWPN={WWPN_TEXT}\n", "")


def test_udev_id_of_a_control_disk_without_a_port_designator(sysfs: Path) -> None:
    assert run_udev_id(sysfs, "sdc") == (0, "EDIF_CONTROL=1\n", "")


@pytest.mark.parametrize("disk, seen", [("sdd", "'QEMU' product 'QEMU HARDDISK'"),
                                        ("sde", "'EDIF' product 'DISK'")])
def test_udev_id_refuses_other_disks_with_nothing_on_stdout(sysfs: Path, disk: str, seen: str) -> None:
    code, out, err = run_udev_id(sysfs, disk)
    assert (code, out) == (exits.EXIT_NO_DISK, "")
    assert f"edif-agent: {disk} is not an EDIF control LUN: INQUIRY says vendor {seen}" in err


def test_udev_id_of_a_missing_device(sysfs: Path) -> None:
    code, out, err = run_udev_id(sysfs, "sdz")
    assert (code, out) == (exits.EXIT_NO_DISK, "")
    assert "sdz" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["../sdb", "sdb/../sdb", "..", "", "/dev/sdb", "-x"])
def test_udev_id_refuses_what_is_not_a_kernel_name(sysfs: Path, name: str) -> None:
    code, out, err = run_udev_id(sysfs, "--", name)
    assert (code, out) == (2, "")
    assert "Traceback" not in err


def test_udev_id_other_inquiry_strings(sysfs: Path) -> None:
    """--vendor/--product follow a host configured with other strings (as the agent's options do)."""
    want = f"EDIF_CONTROL=1\nEDIF_PORT_WWPN={WWPN_TEXT}\n"
    assert run_udev_id(sysfs, "sde", "--product", "DISK")[:2] == (0, want)
    assert identify("sdb", sys_root=str(sysfs)) == {"EDIF_CONTROL": "1", "EDIF_PORT_WWPN": WWPN_TEXT}
    assert format_properties({"A": "1", "B": "x"}) == "A=1\nB=x\n"


# -- the rule, evaluated -----------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rules(text: str) -> list[list[tuple[str, str, str]]]:
    """Each rule line as its (key, operator, value) tokens; a line that does not parse fails the test."""
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens, pos = [], 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            assert m, f"60-edif-control.rules:{n}: cannot parse {line[pos:]!r}"
            tokens.append(m.groups())
            pos = m.end()
        rules.append(tokens)
    return rules


@dataclass
class Device:
    """One uevent as udev sees it: the device's keys and its parents' (SUBSYSTEMS, ATTRS)."""

    action: str
    subsystem: str
    kernel: str
    env: dict[str, str]
    attrs: dict[str, str] = field(default_factory=dict)
    parents: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@dataclass
class Outcome:
    attrs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    symlinks: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))


def evaluate(rules: list[list[tuple[str, str, str]]], dev: Device, program) -> Outcome:  # noqa: ANN001
    """udev's semantics for the keys the rule file uses (udev(7)): a line applies when all its match
    keys match; SUBSYSTEMS/ATTRS must all match one device of the parent chain; IMPORT{program}
    matches when the program succeeds and imports its KEY=value lines; GOTO skips to its LABEL."""
    out = Outcome()
    env = dict(dev.env)

    def subst(v: str) -> str:
        return re.sub(r"\$env\{(\w+)\}", lambda m: env.get(m.group(1), ""), v.replace("%k", dev.kernel))

    goto = None
    for tokens in rules:
        if goto is not None:
            if tokens[0][0] == "LABEL" and tokens[0][2] == goto:
                goto = None
            continue
        matches = [t for t in tokens if t[1] in ("==", "!=") or t[0].startswith("IMPORT")]
        parent_keys = [t for t in matches if t[0] == "SUBSYSTEMS" or t[0].startswith("ATTRS{")]
        ok = True
        for key, op, value in matches:
            if (key, op, value) in parent_keys:
                continue
            if key.startswith("IMPORT{program}"):
                props = program(subst(value))
                ok = props is not None
                env.update(props or {})
            else:
                seen = {"ACTION": dev.action, "SUBSYSTEM": dev.subsystem, "KERNEL": dev.kernel}.get(key)
                if key.startswith("ENV{"):
                    seen = env.get(key[4:-1], "")
                elif key.startswith("ATTR{"):
                    seen = dev.attrs.get(key[5:-1], "")
                ok = _glob(seen or "", value) == (op == "==")
            if not ok:
                break
        if ok and parent_keys:
            chain = [(dev.subsystem, dev.attrs), *dev.parents]
            ok = any(all(_glob(sub if k == "SUBSYSTEMS" else attrs.get(k[6:-1], ""), v) == (op == "==")
                         for k, op, v in parent_keys) for sub, attrs in chain)
        if not ok:
            continue
        for key, op, value in tokens:
            if (key, op, value) in matches:
                continue
            v = subst(value)
            if key == "GOTO":
                goto = v
                break
            if key.startswith("ENV{"):
                name = key[4:-1]
                env[name] = (env.get(name, "") + " " + v).strip() if op == "+=" else v
                out.env[name] = env[name]
            elif key.startswith("ATTR{"):
                out.attrs[key[5:-1]] = v
            elif key in ("SYMLINK", "TAG", "OPTIONS"):
                {"SYMLINK": out.symlinks, "TAG": out.tags, "OPTIONS": out.options}[key].append(v)
    return out


def scsi_parent(vendor: str, model: str) -> tuple[str, dict[str, str]]:
    return "scsi", {"vendor": vendor.ljust(8), "model": model.ljust(16)}


@pytest.fixture
def udev_program(sysfs: Path):  # noqa: ANN201
    """IMPORT{program}: the agent's udev-id, which must be what the rule names, run on the fake sysfs."""
    calls: list[str] = []

    def program(cmd: str) -> dict[str, str] | None:
        calls.append(cmd)
        binary, sub, kernel = cmd.split()
        assert (binary, sub) == ("/usr/bin/edif-agent", "udev-id")
        code, out, _ = run_udev_id(sysfs, kernel)
        return dict(ln.split("=", 1) for ln in out.splitlines()) if code == 0 else None

    program.calls = calls  # type: ignore[attr-defined]
    return program


def block(kernel: str, vendor: str, model: str, action: str = "add") -> Device:
    return Device(action, "block", kernel, {"DEVTYPE": "disk"}, parents=[scsi_parent(vendor, model)])


def test_rule_names_a_control_disk_by_its_port_and_starts_its_agent(udev_program) -> None:  # noqa: ANN001
    out = evaluate(parse_rules(RULE.read_text()), block("sdb", "EDIF", "CTRL"), udev_program)
    assert out.symlinks == [f"edif/{WWPN_TEXT}"]
    assert out.env["SYSTEMD_WANTS"] == f"edif-agent@{WWPN_TEXT}.service"
    assert "systemd" in out.tags
    assert out.attrs == {"queue/nomerges": "2", "queue/scheduler": "none", "queue/read_ahead_kb": "0"}
    assert out.options == ["nowatch"]
    assert out.env["UDISKS_IGNORE"] == "1" and out.env["UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG"] == "1"
    assert "SYSTEMD_READY" not in out.env  # the agent's unit binds to the .device unit
    assert udev_program.calls == ["/usr/bin/edif-agent udev-id sdb"]


def test_rule_without_a_port_designator_tunes_the_disk_but_names_nothing(udev_program) -> None:  # noqa: ANN001
    out = evaluate(parse_rules(RULE.read_text()), block("sdc", "EDIF", "CTRL"), udev_program)
    assert out.symlinks == [] and "SYSTEMD_WANTS" not in out.env
    assert out.attrs["queue/nomerges"] == "2" and out.options == ["nowatch"]


@pytest.mark.parametrize("dev", [block("sdd", "QEMU", "QEMU HARDDISK"), block("sde", "EDIF", "DISK"),
                                 block("sdb", "EDIF", "CTRL", action="remove"),
                                 Device("add", "block", "sdb1", {"DEVTYPE": "partition"},
                                        parents=[scsi_parent("EDIF", "CTRL")])])
def test_rule_leaves_every_other_device_alone(udev_program, dev: Device) -> None:  # noqa: ANN001
    out = evaluate(parse_rules(RULE.read_text()), dev, udev_program)
    assert out == Outcome()
    assert udev_program.calls == []


def test_rule_raises_the_command_timer_of_the_control_lun_only(udev_program) -> None:  # noqa: ANN001
    rules = parse_rules(RULE.read_text())
    for vendor, model, want in (("EDIF", "CTRL", {"timeout": "600"}), ("QEMU", "QEMU HARDDISK", {})):
        dev = Device("add", "scsi", "2:0:0:0", {"DEVTYPE": "scsi_device"},
                     attrs=dict(scsi_parent(vendor, model)[1]))
        assert evaluate(rules, dev, udev_program).attrs == want


def test_the_udev_name_is_the_agent_unit_instance() -> None:
    """SYSTEMD_WANTS names an instance of the shipped template, and the device unit it binds to is the
    one systemd makes of the symlink /dev/edif/WWPN (colons need no escaping in unit names)."""
    assert (UNITS / "edif-agent@.service").is_file()
    escape = shutil.which("systemd-escape")
    if escape is None:
        unavailable("systemd-escape not installed (Debian: systemd)")
    dev_unit = subprocess.run([escape, "--path", "--suffix=device", f"/dev/edif/{WWPN_TEXT}"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert dev_unit == "dev-edif-%i.device".replace("%i", WWPN_TEXT)
    inst = subprocess.run([escape, "--template=edif-agent@.service", WWPN_TEXT],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert inst == f"edif-agent@{WWPN_TEXT}.service"


def test_the_udev_rule_program_is_an_edif_agent_subcommand():
    """60-edif-control.rules runs `edif-agent udev-id %k`: the installed entry point must have it."""
    from click.testing import CliRunner

    from guest_agent.cli import main

    res = CliRunner().invoke(main, ["udev-id", "--help"])
    assert res.exit_code == 0 and "EDIF_PORT_WWPN" in res.output
