"""The Debian packages: `make deb` builds them once per session (about a minute: dpkg-buildpackage on a
copy of the tree, then lintian), and the tests read what came out.

* the four .debs, at pyproject.toml's version (the one place it is written; debian/changelog agrees);
* their control fields (Depends, Recommends: Debian's own python3-* packages);
* their file lists: programs in /usr/bin, units in /lib/systemd/system (debhelper 13.11 of Debian 12),
  the udev rule, the modules-load.d file, /etc/edifd/edifd.toml as a conffile, installed unchanged;
* lintian: no error, and every warning it gives is explained in docs/packaging.md;
* `systemd-analyze verify` of every unit as the packages install it (the .debs unpacked into a root
  that also holds systemd's own units, so Requires=/After= resolve; `--root` makes ExecStart= point
  into it), and one deliberately broken unit in the same root to show the check can fail.
Without the build tools (scripts/setup.sh installs them) the tests skip, and fail under CI=true.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("python3-edif", "edif-host", "edif-agent", "edif-target")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
WWPN_TEXT = "21:00:00:1b:32:00:00:a1"


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_changelog_names_the_pyproject_version() -> None:
    """debian/rules refuses to build otherwise; this says so without a build."""
    first = (ROOT / "debian/changelog").read_text().splitlines()[0]
    m = re.match(r"^edif \(([^)]+)\) \S+; urgency=\w+$", first)
    assert m, first
    assert m.group(1) == pyproject_version()


def test_setup_installs_every_build_dependency() -> None:
    """A fresh machine (CI's) gets the Build-Depends from scripts/setup.sh's apt list; the two virtual
    names are provided by debhelper and dh-python."""
    control_text = (ROOT / "debian/control").read_text()
    m = re.search(r"^Build-Depends:(.*?)\n(?=\S)", control_text, re.M | re.S)
    assert m, "no Build-Depends"
    provided = {"debhelper-compat": "debhelper", "dh-sequence-python3": "dh-python"}
    need = {provided.get(n, n) for n in deps(m.group(1))}
    setup = (ROOT / "scripts/setup.sh").read_text()
    apt = re.search(r'^APT_PACKAGES="(.*?)"', setup, re.M | re.S)
    assert apt
    assert sorted(need - set(apt.group(1).split())) == []


@dataclass
class Build:
    out: Path
    log: str
    version: str

    def deb(self, package: str) -> Path:
        return self.out / f"{package}_{self.version}_all.deb"


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    need = ["dpkg-buildpackage", "dh", "dh_python3", "lintian", "git", "make"]
    missing = [t for t in need if shutil.which(t, path=SYSTEM_PATH) is None]
    if not Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").is_file():
        missing.append("pybuild-plugin-pyproject")
    if missing:
        unavailable(f"Debian build tools missing: {', '.join(missing)} (scripts/setup.sh installs them)")
    if not (ROOT / ".git").exists():
        unavailable("make deb copies the tree with git ls-files: not a git checkout")
    out = tmp_path_factory.mktemp("deb")
    res = subprocess.run(["make", "deb", f"DEB_DIR={out}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PATH": SYSTEM_PATH})
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-6000:]
    return Build(out, log, pyproject_version())


def control(deb: Path, *fields: str) -> dict[str, str]:
    """The named fields of the package's control file (`dpkg-deb -f` prints bare values for one field,
    so all are read and picked)."""
    res = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True)
    allf: dict[str, str] = {}
    for ln in res.stdout.splitlines():
        if ln[:1].isspace():
            continue  # a continuation line (the long Description)
        k, _, v = ln.partition(":")
        allf[k] = v.strip()
    return {f: allf[f] for f in fields if f in allf}


def files(deb: Path) -> dict[str, str]:
    """Path (without the leading '.') -> mode string, for every regular file and symlink."""
    res = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True)
    out = {}
    for ln in res.stdout.splitlines():
        parts = ln.split()
        if not parts[0].startswith("d"):
            out[parts[5].removeprefix(".")] = parts[0]
    return out


def _extract(deb: Path, path: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    return subprocess.run(["tar", "-xOf", "-", f".{path}"], input=tar, capture_output=True, check=True).stdout


def deps(value: str) -> set[str]:
    """Package names of a Depends-like field (versions and alternatives' order dropped)."""
    return {alt.split()[0].split(":")[0] for part in value.split(",") if part.strip()
            for alt in part.split("|")}


def test_the_build_leaves_the_source_tree_alone(build: Build) -> None:
    """dpkg-buildpackage ran on a copy: none of its debris is in the tree (git status stays clean)."""
    debris = ["debian/tmp", "debian/.debhelper", "debian/files", "debian/debhelper-build-stamp", "debian/man",
              ".pybuild", *(f"debian/{p}" for p in PACKAGES)]
    assert [d for d in debris if (ROOT / d).exists()] == []
    assert list((ROOT / "debian").glob("*.substvars")) == []
    assert (build.out / f"edif-{build.version}" / "debian/control").is_file()  # where it built instead


def test_four_packages_at_the_pyproject_version(build: Build) -> None:
    for p in PACKAGES:
        fields = control(build.deb(p), "Package", "Version", "Architecture")
        assert fields == {"Package": p, "Version": build.version, "Architecture": "all"}


def test_depends_are_debians_own_packages(build: Build) -> None:
    lib = control(build.deb("python3-edif"), "Depends")
    assert {"python3-cryptography", "python3-click"} <= deps(lib["Depends"])
    assert "python3-cryptography (>= 38)" in lib["Depends"] and "python3-click (>= 8.1)" in lib["Depends"]
    own = f"python3-edif (= {build.version})"
    host = control(build.deb("edif-host"), "Depends", "Recommends")
    assert own in host["Depends"]
    assert {"python3-rtslib-fb", "python3-pyudev", "python3"} <= deps(host["Depends"])
    assert deps(host["Recommends"]) == {"python3-prometheus-client"}
    agent = control(build.deb("edif-agent"), "Depends")
    assert own in agent["Depends"] and "python3-pyudev" in deps(agent["Depends"])
    assert "python3-rtslib-fb" not in deps(agent["Depends"])  # the EDIF VM has no LIO
    target = control(build.deb("edif-target"), "Depends", "Recommends")
    assert own in target["Depends"]
    assert deps(target["Recommends"]) == {"python3-prometheus-client"}


def test_file_lists(build: Build) -> None:
    want = {
        "edif-host": {"/usr/bin/edifd", "/usr/bin/edifctl", "/lib/systemd/system/edifd.service",
                      "/usr/lib/modules-load.d/edif-host.conf", "/etc/edifd/edifd.toml",
                      "/usr/share/doc/edif-host/operations.md", "/usr/share/doc/edif-host/packaging.md",
                      "/usr/share/man/man1/edifd.1.gz", "/usr/share/man/man1/edifctl.1.gz"},
        "edif-agent": {"/usr/bin/edif-agent", "/lib/systemd/system/edif-agent@.service",
                       "/lib/udev/rules.d/60-edif-control.rules", "/usr/share/doc/edif-agent/operations.md",
                       "/usr/share/doc/edif-agent/examples/agent.toml",
                       "/usr/share/man/man1/edif-agent.1.gz"},
        "edif-target": {"/usr/bin/edif-target", "/lib/systemd/system/edif-target.service",
                        "/usr/share/doc/edif-target/operations.md",
                        "/usr/share/doc/edif-target/examples/target.toml",
                        "/usr/share/man/man1/edif-target.1.gz"},
        "python3-edif": {"/usr/lib/python3/dist-packages/edifd/__init__.py",
                         "/usr/lib/python3/dist-packages/edifd/cli.py",
                         "/usr/lib/python3/dist-packages/guest_agent/cli.py",
                         "/usr/lib/python3/dist-packages/guest_agent/udev_id.py"},
    }
    listing = {p: files(build.deb(p)) for p in PACKAGES}
    for p, paths in want.items():
        assert paths <= listing[p].keys(), (p, sorted(paths - listing[p].keys()))
    for p in ("edif-host", "edif-agent", "edif-target"):
        progs = [f for f in listing[p] if f.startswith("/usr/bin/")]
        assert progs and all(listing[p][f] == "-rwxr-xr-x" for f in progs), listing[p]
        assert not [f for f in listing[p] if "dist-packages" in f]  # the library is python3-edif's
    lib = listing["python3-edif"]
    assert not [f for f in lib if f.startswith("/usr/bin/") or re.search(r"/(tests|lab|bench)/", f)]
    owners = [p for p in PACKAGES if any(f.startswith("/lib/systemd/system/") for f in listing[p])]
    assert owners == ["edif-host", "edif-agent", "edif-target"]


def test_installed_files_are_the_trees(build: Build) -> None:
    """Units, rule, module list and the conffile go in unchanged; the programs run Debian's python3."""
    same = {
        "edif-host": {"/lib/systemd/system/edifd.service": "systemd/edifd.service",
                      "/usr/lib/modules-load.d/edif-host.conf": "systemd/modules-load.d/edif-host.conf",
                      "/etc/edifd/edifd.toml": "examples/edifd.toml"},
        "edif-agent": {"/lib/systemd/system/edif-agent@.service": "systemd/edif-agent@.service",
                       "/lib/udev/rules.d/60-edif-control.rules": "systemd/60-edif-control.rules"},
        "edif-target": {"/lib/systemd/system/edif-target.service": "systemd/edif-target.service"},
    }
    for p, pairs in same.items():
        for inst, src in pairs.items():
            assert _extract(build.deb(p), inst) == (ROOT / src).read_bytes(), inst
    for p, prog in (("edif-host", "edifd"), ("edif-host", "edifctl"), ("edif-agent", "edif-agent"),
                    ("edif-target", "edif-target")):
        assert _extract(build.deb(p), f"/usr/bin/{prog}").startswith(b"#!/usr/bin/python3\n"), prog


def test_man_pages_hold_every_command_and_the_exit_codes(build: Build) -> None:
    """debian/manpage.py writes them from the click help: each command of a group has its section."""
    for p, prog, commands in (("edif-host", "edifd", ("run", "check-config")),
                              ("edif-host", "edifctl", ("status", "gen-key")),
                              ("edif-agent", "edif-agent", ("run", "status", "check-config")),
                              ("edif-target", "edif-target", ("run", "check-config"))):
        page = gzip.decompress(_extract(build.deb(p), f"/usr/share/man/man1/{prog}.1.gz")).decode()
        assert page.startswith(f'.TH "{prog.upper()}" 1 '), prog
        for c in commands:
            usage = f"{prog} {c} ".replace("-", "\\-")  # roff's minus sign
            assert f'.SS "{usage}' in page, (prog, c)
        assert ".SH EXIT STATUS" in page and "configuration or input file refused" in page, prog


def test_edifd_toml_is_a_conffile(build: Build) -> None:
    res = subprocess.run(["dpkg-deb", "-I", str(build.deb("edif-host")), "conffiles"], capture_output=True,
                         text=True, check=True)
    assert res.stdout.split() == ["/etc/edifd/edifd.toml"]


def test_lintian_reports_no_error_and_docs_explain_every_warning(build: Build) -> None:
    tags = re.findall(r"^([EWX]): (\S+): ([a-z0-9-]+)", build.log, re.M)
    assert "lintian --fail-on error" in build.log  # make deb ran lintian on the .changes
    assert [t for t in tags if t[0] == "E"] == []
    doc = (ROOT / "docs/packaging.md").read_text()
    unexplained = sorted({t[2] for t in tags if t[0] == "W" and f"`{t[2]}`" not in doc})
    assert unexplained == [], "lintian warnings not listed in docs/packaging.md"


@pytest.fixture(scope="session")
def installed_root(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four packages unpacked over a copy of this system's units (sysinit.target, the mount units)."""
    analyze = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if analyze is None or not Path("/lib/systemd/system/sysinit.target").exists():
        unavailable("systemd-analyze and systemd's units needed (Debian: systemd)")
    root = tmp_path_factory.mktemp("root")
    for p in PACKAGES:
        subprocess.run(["dpkg-deb", "-x", str(build.deb(p)), str(root)], check=True)
    subprocess.run(["cp", "-an", "/lib/systemd/system/.", str(root / "lib/systemd/system/")], check=True)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in ROOT. An instance name with ':' in it is given as TEMPLATE:INSTANCE
    (verify reads FILE:NAME as "this file under that name", so a bare name with colons is misread)."""
    arg = unit
    if "@" in unit and not unit.endswith("@.service"):
        template = re.sub(r"@.*\.", "@.", unit)
        arg = f"{root}/lib/systemd/system/{template}:{unit}"
    cmd = ["systemd-analyze", "verify", f"--root={root}", "--man=no", arg]
    env = {**os.environ, "PATH": SYSTEM_PATH}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("unit", ["edifd.service", "edif-agent@.service", f"edif-agent@{WWPN_TEXT}.service",
                                  "edif-target.service"])
def test_systemd_analyze_verify_is_clean_as_installed(installed_root: Path, unit: str) -> None:
    res = verify(installed_root, unit)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


def test_verify_catches_a_broken_unit_in_that_root(installed_root: Path) -> None:
    bad = installed_root / "lib/systemd/system/edif-broken.service"
    bad.write_text("[Service]\nExecStart=/usr/bin/edif-nothing run\nRestart=sometimes\n")
    try:
        res = verify(installed_root, "edif-broken.service")
    finally:
        bad.unlink()
    assert res.returncode != 0
    assert "/usr/bin/edif-nothing is not executable" in res.stderr and "sometimes" in res.stderr
