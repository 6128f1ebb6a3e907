"""LIO configuration for TCMU user backstores, through rtslib-fb.

Order matters and is enforced by `Lio.setup()`:
  1. configfs mounted, target_core_mod / target_core_user / the fabric module loaded,
     /etc/target and /etc/rtslib-fb-target present (rtslib fails on its dbroot otherwise);
  2. the user backstore, created with `nl_reply_supported=-1` (the kernel never waits for a
     netlink reply we do not send), then its attributes `cmd_time_out`, `qfull_time_out` and
     `tmr_notification=1` written **before** any export (the kernel refuses cmd_time_out later);
  3. the ring handler started on its UIO device (without it the LUN scan blocks ~30 s);
  4. the export: tcm_loop (host-local /dev/sdX), iSCSI, or vhost-scsi (naa. WWPN for libvirt
     <hostdev type='scsi_host'>).
Teardown is the reverse: remove the export, stop the handler (it drains the ring), remove the
backstore.

rtslib is imported lazily (Debian and PyPI both provide `rtslib_fb`; older PyPI only `rtslib`).
Only APIs present in Debian 12's python3-rtslib-fb 2.1.75 are used.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import math
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from edifd.edges.secret_file import SecretFileError, load_chap_secret
from edifd.scsi import BLOCK_SIZES
from edifd.tcmu.errors import LioError

CONFIGFS = Path("/sys/kernel/config")
DBROOT_DIRS = (Path("/etc/target"), Path("/etc/rtslib-fb-target"))
SYS_MODULE = Path("/sys/module")
DEFAULT_PARK_TIME = 5.0  # the channel's heartbeat for parked READs (docs/tcmu.md, Timeouts)
MIN_CMD_TIME_OUT = 30  # the kernel's own default (TCMU_TIME_OUT)
CMD_TIME_OUT_MARGIN = 25  # seconds between our heartbeat and the kernel's timer

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CFG_RE = re.compile(r"^[A-Za-z0-9_.@=+-][A-Za-z0-9_.@=+/-]{0,200}$")
_NAA_RE = re.compile(r"^naa\.[0-9a-fA-F]{16}$")
_CHAP_USER_RE = re.compile(r"^[!-~]{1,255}$")  # rtslib-fb's 255; no spaces (it strips them)
_IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[^\s:]+(:\S+)?|eui\.[0-9a-fA-F]{16}|naa\.[0-9a-fA-F]{16,32})$")


class Fabric(enum.Enum):
    LOOPBACK = "loopback"
    ISCSI = "iscsi"
    VHOST = "vhost"

    @property
    def kernel_module(self) -> str:
        return {"loopback": "tcm_loop", "iscsi": "iscsi_target_mod", "vhost": "vhost_scsi"}[self.value]


def cmd_time_out_for(park_time: float = DEFAULT_PARK_TIME) -> int:
    """TCMU cmd_time_out (whole seconds) that never fires before our park-time heartbeat.

    The heartbeat completes a parked READ after `park_time`; the kernel timer would instead fail
    it with NOT READY 08h/00h (EIO in the guest). A margin of 25 s absorbs a slow guest or a
    paused daemon, and a timer that still exists bounds the wait if the daemon dies.
    """
    if not park_time > 0 or math.isinf(park_time):
        raise ValueError(f"park time must be a positive number of seconds, not {park_time!r}")
    return max(MIN_CMD_TIME_OUT, math.ceil(park_time) + CMD_TIME_OUT_MARGIN)


@dataclass(frozen=True)
class BackstoreSpec:
    """One TCMU user backstore. UIO name: tcm-user/<hba>/<name>/<subtype>/<cfg>."""

    name: str
    subtype: str
    cfg: str
    size: int  # bytes
    block_size: int = 512
    max_data_area_mb: int = 64  # a small data area: parked READs are few and short
    cmd_ring_size_mb: int | None = None  # mailbox + ring, 1..8; kernel default 8
    hw_max_sectors: int | None = None  # kernel default 128
    wwn: str | None = None  # T10 unit serial (vpd_unit_serial); rtslib makes a uuid if None
    park_time: float = DEFAULT_PARK_TIME
    cmd_time_out: int | None = None  # None: cmd_time_out_for(park_time)
    qfull_time_out: int | None = None  # None: same as cmd_time_out
    tmr_notification: bool = True

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"backstore name {self.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not _NAME_RE.match(self.subtype):
            raise ValueError(f"subtype {self.subtype!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not _CFG_RE.match(self.cfg):
            raise ValueError(f"cfg {self.cfg!r}: no ':' (LIO), ',' (control syntax) or whitespace")
        if len(self.config) > 255:
            raise ValueError("dev_config is limited to 255 characters")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block size {self.block_size} not one of 512/1024/2048/4096")
        if self.size <= 0 or self.size % self.block_size:
            raise ValueError(f"size {self.size} must be a positive multiple of {self.block_size}")
        if not 1 <= self.max_data_area_mb <= 2048:
            raise ValueError(f"max_data_area_mb {self.max_data_area_mb} outside 1..2048")
        if self.cmd_ring_size_mb is not None and not 1 <= self.cmd_ring_size_mb <= 8:
            raise ValueError(f"cmd_ring_size_mb {self.cmd_ring_size_mb} outside 1..8")
        if self.wwn is not None and not (0 < len(self.wwn) <= 254 and self.wwn.isascii()
                                         and self.wwn.isprintable()):
            raise ValueError("unit serial (wwn) must be 1-254 printable ASCII characters")
        if self.hw_max_sectors is not None and self.hw_max_sectors <= 0:
            raise ValueError("hw_max_sectors must be positive")
        if self.cmd_time_out is not None and 0 < self.cmd_time_out <= self.park_time:
            raise ValueError(f"cmd_time_out {self.cmd_time_out} s would fire before the "
                             f"{self.park_time} s park-time heartbeat")
        if self.cmd_time_out is not None and self.cmd_time_out < 0:
            raise ValueError("cmd_time_out must be >= 0 (0 disables it)")
        if self.qfull_time_out is not None and self.qfull_time_out < -1:
            raise ValueError("qfull_time_out must be -1 or >= 0")
        cmd_time_out_for(self.park_time)

    @property
    def config(self) -> str:
        return f"{self.subtype}/{self.cfg}"

    @property
    def control(self) -> str:
        """Written to core/user_N/<name>/control before enable."""
        ctl = (f"nl_reply_supported=-1,hw_block_size={self.block_size},"
               f"max_data_area_mb={self.max_data_area_mb}")
        if self.cmd_ring_size_mb is not None:
            ctl += f",cmd_ring_size_mb={self.cmd_ring_size_mb}"
        return ctl

    @property
    def effective_cmd_time_out(self) -> int:
        return self.cmd_time_out if self.cmd_time_out is not None else cmd_time_out_for(self.park_time)

    @property
    def attributes(self) -> dict[str, int]:
        """attrib/ values written right after creation, before any export."""
        cto = self.effective_cmd_time_out
        return {
            "cmd_time_out": cto,
            # Commands waiting for ring or data space wait as long as any command may: parked
            # READs free theirs within park_time. Explicit, so cmd_time_out=0 does not make it 30 s.
            "qfull_time_out": self.qfull_time_out if self.qfull_time_out is not None else cto,
            "tmr_notification": int(self.tmr_notification),
        }


@dataclass(frozen=True)
class LoopbackExport:
    """tcm_loop: a local SCSI host; the LUN appears as /dev/sdX on this machine."""

    lun: int = 0
    wwn: str | None = None  # naa.; generated if None
    fabric = Fabric.LOOPBACK

    def __post_init__(self) -> None:
        if self.wwn is not None and not _NAA_RE.match(self.wwn):
            raise ValueError(f"tcm_loop WWN {self.wwn!r} must be 'naa.' + 16 hex digits")


@dataclass(frozen=True)
class IscsiChap:
    """CHAP for every node ACL of an iSCSI export: the initiator proves itself with `user` and the secret
    in `secret_file`; with `mutual_user` and `mutual_secret_file` the target answers an initiator that
    asks it to prove itself too. Only paths here: the secrets are read (edifd.edges.secret_file's policy)
    as the export is made and written to configfs, never kept or shown."""

    user: str
    secret_file: Path
    mutual_user: str | None = None
    mutual_secret_file: Path | None = None

    def __post_init__(self) -> None:
        for name in (self.user, self.mutual_user):
            if name is not None and not _CHAP_USER_RE.match(name):
                raise ValueError(f"CHAP user {name!r}: 1-255 printable ASCII characters, no spaces")
        if (self.mutual_user is None) != (self.mutual_secret_file is None):
            raise ValueError("mutual CHAP needs both mutual_user and mutual_secret_file")

    @property
    def mutual(self) -> bool:
        return self.mutual_user is not None


@dataclass(frozen=True)
class IscsiExport:
    """iSCSI target. No `acls`: demo mode (any initiator, read-write, no CHAP). With `acls`: only those
    initiator names, each a node ACL, and with `chap` each of them must authenticate (authentication=1)."""

    iqn: str
    portals: tuple[tuple[str, int], ...] = (("127.0.0.1", 3260),)
    lun: int = 0
    tpg: int = 1
    acls: tuple[str, ...] = ()  # initiator IQNs allowed to log in
    tpg_attributes: tuple[tuple[str, int | str], ...] = ()  # e.g. (("default_cmdsn_depth", 64),)
    chap: IscsiChap | None = None
    fabric = Fabric.ISCSI

    def __post_init__(self) -> None:
        for name in (self.iqn, *self.acls):
            if not _IQN_RE.match(name):
                raise ValueError(f"{name!r} is not an iSCSI name (iqn./eui./naa.)")
        for ip, port in self.portals:
            if not 0 < port < 65536 or not ip or any(c.isspace() for c in ip):
                raise ValueError(f"bad portal {ip!r}:{port}")
        if self.chap is not None and not self.acls:
            raise ValueError("CHAP is set per node ACL: give the initiators (acls) it applies to")


@dataclass(frozen=True)
class VhostExport:
    """vhost-scsi: libvirt <hostdev type='scsi_host'><source protocol='vhost' wwpn='naa...'/>."""

    wwpn: str | None = None  # naa. + 16 hex; generated if None
    lun: int = 0
    tpg: int = 1
    fabric = Fabric.VHOST

    def __post_init__(self) -> None:
        if self.wwpn is not None and not _NAA_RE.match(self.wwpn):
            raise ValueError(f"vhost WWPN {self.wwpn!r} must be 'naa.' + 16 hex digits")


ExportSpec = LoopbackExport | IscsiExport | VhostExport


def generate_naa() -> str:
    """naa. + IEEE registered format with the LIO OUI 00:14:05, like rtslib's generate_wwn."""
    return "naa.5001405" + secrets.token_hex(5)[:9]


def stable_naa(*parts: str) -> str:
    """The naa. WWN of `generate_naa`'s format whose 36 vendor bits are SHA-256 of `parts`: the same
    parts give the same WWN on every start, so a guest's saved configuration keeps matching."""
    digest = hashlib.sha256("\0".join(("edifd naa", *parts)).encode()).hexdigest()
    return "naa.5001405" + digest[:9]


@dataclass(frozen=True)
class Backstore:
    spec: BackstoreSpec
    hba_index: int
    path: Path  # configfs core/user_N/<name>
    so: Any = field(repr=False, compare=False)

    @property
    def uio_name(self) -> str:
        return f"tcm-user/{self.hba_index}/{self.spec.name}/{self.spec.config}"


@dataclass(frozen=True)
class Export:
    fabric: Fabric
    wwn: str
    tpg: int
    lun: int
    target: Any = field(repr=False, compare=False)
    tpg_obj: Any = field(repr=False, compare=False)


# -- environment checks ------------------------------------------------------------------------------
def check_configfs(configfs: Path = CONFIGFS, proc_mounts: Path = Path("/proc/mounts")) -> None:
    """Raise LioError naming the fix if configfs or the LIO core is missing."""
    try:
        mounts = proc_mounts.read_text()
    except OSError:
        mounts = ""
    mounted = any(line.split()[1:3] == [str(configfs), "configfs"] for line in mounts.splitlines()
                  if len(line.split()) >= 3)
    if not mounted and not (configfs / "target").is_dir():
        raise LioError(f"configfs is not mounted on {configfs}: run "
                       f"`modprobe configfs && mount -t configfs configfs {configfs}`")
    if not (configfs / "target").is_dir():
        raise LioError(f"{configfs}/target is missing: load the LIO core with `modprobe target_core_mod`")


def ensure_module(name: str, sys_module: Path = SYS_MODULE,
                  modprobe: Callable[[str], None] | None = None) -> None:
    """Load a kernel module if it is not loaded; LioError names the module on failure."""
    if (sys_module / name).is_dir():
        return
    # A successful modprobe is enough: a built-in "module" may have no /sys/module entry.
    try:
        (modprobe or _modprobe)(name)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LioError(f"kernel module {name} is not loaded and `modprobe {name}` failed: {exc}; "
                       f"install the kernel's modules package or load {name} by hand") from None


def _modprobe(name: str) -> None:
    res = subprocess.run(["modprobe", name], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode:
        raise subprocess.SubprocessError(res.stderr.strip() or f"exit status {res.returncode}")


def ensure_dbroot_dirs(dirs: Sequence[Path] = DBROOT_DIRS) -> None:
    """rtslib sets the LIO dbroot to /etc/rtslib-fb-target and fails if it does not exist."""
    for d in dirs:
        try:
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise LioError(f"cannot create {d}: {exc.strerror}") from None


def import_rtslib() -> ModuleType:
    for name in ("rtslib_fb", "rtslib"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise LioError("rtslib-fb is not installed: `apt install python3-rtslib-fb` or `pip install rtslib-fb`")


# -- configuration ---------------------------------------------------------------------------------
class Lio:
    """Creates and removes TCMU backstores and their exports."""

    def __init__(self, rtslib: ModuleType | None = None, *, configfs: Path = CONFIGFS,
                 dbroot_dirs: Sequence[Path] = DBROOT_DIRS, sys_module: Path = SYS_MODULE,
                 modprobe: Callable[[str], None] | None = None) -> None:
        self._rts = rtslib
        self.configfs = configfs
        self.dbroot_dirs = tuple(dbroot_dirs)
        self.sys_module = sys_module
        self._modprobe = modprobe
        self._prepared: set[str] = set()

    @property
    def rts(self) -> ModuleType:
        if self._rts is None:
            self._rts = import_rtslib()
        return self._rts

    def prepare(self, fabrics: Sequence[Fabric] = ()) -> None:
        """Check configfs, load the modules, create the dbroot directories."""
        mods = ["target_core_mod", "target_core_user", *(f.kernel_module for f in fabrics)]
        if "configfs" not in self._prepared:
            if not (self.configfs / "target").is_dir():
                ensure_module("target_core_mod", self.sys_module, self._modprobe)
            check_configfs(self.configfs)
            ensure_dbroot_dirs(self.dbroot_dirs)
            self._prepared.add("configfs")
        for m in mods:
            if m not in self._prepared:
                ensure_module(m, self.sys_module, self._modprobe)
                self._prepared.add(m)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except LioError:
            raise
        except Exception as exc:  # rtslib raises RTSLibError, OSError, ...
            raise LioError(f"{what}: {exc}") from None

    def create_backstore(self, spec: BackstoreSpec) -> Backstore:
        """Create and enable the user backstore, then set its attributes (before any export)."""
        self.prepare()
        rts = self.rts
        so = self._call(f"creating user backstore {spec.name}", rts.UserBackedStorageObject,
                        spec.name, config=spec.config, size=spec.size, wwn=spec.wwn,
                        hw_max_sectors=spec.hw_max_sectors, control=spec.control)
        try:
            for attr, value in spec.attributes.items():
                self._call(f"setting {attr} on {spec.name}", so.set_attribute, attr, value)
        except LioError:
            self._call(f"removing {spec.name}", so.delete)
            raise
        path = Path(so.path)
        m = re.fullmatch(r"user_(\d+)", path.parent.name)
        if not m:
            raise LioError(f"unexpected backstore path {path}")
        return Backstore(spec, int(m.group(1)), path, so)

    def find_backstore(self, spec: BackstoreSpec) -> Backstore | None:
        """The user backstore an earlier edifd left for `spec` (to re-attach after a restart),
        or None. One with the same name but another config or size raises LioError: serving the
        wrong disk is worse than not starting."""
        self.prepare()
        root = self._call("reading LIO state", self.rts.RTSRoot)
        for so in self._call("listing storage objects", lambda: list(root.storage_objects)):
            if getattr(so, "plugin", None) != "user" or so.name != spec.name:
                continue
            path = Path(so.path)
            m = re.fullmatch(r"user_(\d+)", path.parent.name)
            config, size = self._call(f"reading {spec.name}", lambda so=so: (so.config, int(so.size)))
            if config != spec.config or size != spec.size or not m:
                raise LioError(f"LIO already has a user backstore {spec.name!r} ({config}, {size} bytes) "
                               f"that does not match ({spec.config}, {spec.size} bytes); remove it or "
                               f"choose another name")
            return Backstore(spec, int(m.group(1)), path, so)
        return None

    def export(self, backstore: Backstore, spec: ExportSpec) -> Export:
        """Export the backstore. Start the ring handler first: the LUN scan needs it."""
        self.prepare([spec.fabric])
        rts = self.rts
        fm = self._call(f"loading fabric {spec.fabric.value}", rts.FabricModule, spec.fabric.value)
        secrets_: dict[str, str] = {}
        if isinstance(spec, IscsiExport):
            wwn = spec.iqn
            secrets_ = self._chap_secrets(spec)  # before anything exists: a bad file creates nothing
        elif isinstance(spec, VhostExport):
            wwn = spec.wwpn or generate_naa()
        else:
            wwn = spec.wwn or generate_naa()
        target = self._call(f"creating {spec.fabric.value} target {wwn}", rts.Target, fm, wwn)
        try:
            tag = 1 if isinstance(spec, LoopbackExport) else spec.tpg
            tpg = self._call("creating TPG", rts.TPG, target, tag)  # loopback/vhost: nexus auto
            if isinstance(spec, IscsiExport):
                self._iscsi_tpg(tpg, spec)
            lun = self._call(f"creating LUN {spec.lun}", rts.LUN, tpg, spec.lun, backstore.so)
            if isinstance(spec, IscsiExport):
                for iqn in spec.acls:
                    acl = self._call(f"adding ACL {iqn}", rts.NodeACL, tpg, iqn)
                    if spec.chap is not None:
                        self._set_chap(acl, iqn, spec.chap, secrets_)
                    self._call(f"mapping LUN for {iqn}", rts.MappedLUN, acl, spec.lun, lun)
                self._call("enabling TPG", setattr, tpg, "enable", True)
        except LioError:
            self._call(f"removing target {wwn}", target.delete)
            raise
        return Export(spec.fabric, target.wwn, tag, spec.lun, target, tpg)

    @staticmethod
    def _chap_secrets(spec: IscsiExport) -> dict[str, str]:
        """The export's CHAP secrets by rtslib-fb NodeACL attribute, read under the secret-file policy."""
        if spec.chap is None:
            return {}
        files = {"chap_password": spec.chap.secret_file}
        if spec.chap.mutual_secret_file is not None:
            files["chap_mutual_password"] = spec.chap.mutual_secret_file
        try:
            return {attr: load_chap_secret(path) for attr, path in files.items()}
        except SecretFileError as e:
            raise LioError(f"iSCSI export {spec.iqn}: {e}") from None

    def _set_chap(self, acl: Any, iqn: str, chap: IscsiChap, secrets_: dict[str, str]) -> None:
        """rtslib-fb 2.1.75's NodeACL properties write auth/userid, auth/password, auth/userid_mutual and
        auth/password_mutual under the ACL's configfs directory."""
        self._call(f"setting the CHAP user of ACL {iqn}", setattr, acl, "chap_userid", chap.user)
        if chap.mutual_user is not None:
            self._call(f"setting the mutual CHAP user of ACL {iqn}", setattr, acl, "chap_mutual_userid",
                       chap.mutual_user)
        for attr, secret in secrets_.items():
            try:
                setattr(acl, attr, secret)
            except Exception as exc:  # noqa: BLE001 - rtslib raises RTSLibError, OSError, ...
                # The secret never reaches an error text, whatever rtslib put into its message.
                why = str(exc).replace(secret, "<secret>") if secret else str(exc)
                raise LioError(f"setting the {attr.replace('_', ' ')} of ACL {iqn}: {why}") from None

    def _iscsi_tpg(self, tpg: Any, spec: IscsiExport) -> None:
        if spec.acls:
            # Only the node ACLs log in; with CHAP each of them must authenticate.
            attrs: dict[str, int | str] = {"authentication": int(spec.chap is not None),
                                           "generate_node_acls": 0}
        else:
            # Demo mode: demo_mode_write_protect defaults to 1 (read-only) and must be cleared.
            attrs = {"authentication": 0, "generate_node_acls": 1, "cache_dynamic_acls": 1,
                     "demo_mode_write_protect": 0}
        attrs.update(dict(spec.tpg_attributes))
        for k, v in attrs.items():
            self._call(f"setting TPG attribute {k}", tpg.set_attribute, k, v)
        for ip, port in spec.portals:
            self._call(f"creating portal {ip}:{port}", self.rts.NetworkPortal, tpg, ip, port)

    def unexport(self, export: Export) -> None:
        self._call(f"removing target {export.wwn}", export.target.delete)

    def remove_backstore(self, backstore: Backstore) -> None:
        """Delete the backstore (and any LUN still using it). Stop its handler first."""
        self._call(f"removing backstore {backstore.spec.name}", backstore.so.delete)

    def setup(self, spec: BackstoreSpec, export: ExportSpec,
              start_handler: Callable[[Backstore], Any]) -> tuple[Backstore, Any, Export]:
        """Backstore -> attributes -> handler -> export, rolled back on failure.

        `start_handler(backstore)` must start the ring owner (e.g. TcmuHandler.open(...).start())
        and return it; if the export then fails, its `stop()` is called before the backstore goes.
        """
        self.prepare([export.fabric])
        bs = self.create_backstore(spec)
        handler = None
        try:
            handler = start_handler(bs)
            exp = self.export(bs, export)
        except BaseException:
            if handler is not None and hasattr(handler, "stop"):
                handler.stop()
            self.remove_backstore(bs)
            raise
        return bs, handler, exp


def loopback_disk(export: Export, configfs: Path = CONFIGFS, sysfs: Path = Path("/sys"),
                  timeout: float = 10.0) -> Path:
    """/dev/sdX of a tcm_loop export, waiting for the SCSI scan to finish."""
    if export.fabric is not Fabric.LOOPBACK:
        raise ValueError("only tcm_loop exports appear as local disks")
    addr_file = configfs / "target" / "loopback" / export.wwn / f"tpgt_{export.tpg}" / "address"
    deadline = time.monotonic() + timeout
    while True:
        try:
            h_c_t = addr_file.read_text().strip()  # "H:C:T" of the tcm_loop SCSI host
            dev = sysfs / "bus" / "scsi" / "devices" / f"{h_c_t}:{export.lun}"
            blocks = sorted((dev / "block").iterdir())
            if blocks:
                return Path("/dev") / blocks[0].name
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise LioError(f"no block device for {export.wwn} LUN {export.lun} after {timeout} s")
        time.sleep(0.1)
