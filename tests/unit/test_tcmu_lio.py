"""LIO configuration against a recording fake of the rtslib-fb API (no configfs needed)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from edifd.tcmu.errors import LioError
from edifd.tcmu.lio import (
    BackstoreSpec,
    Fabric,
    IscsiChap,
    IscsiExport,
    Lio,
    LoopbackExport,
    VhostExport,
    check_configfs,
    cmd_time_out_for,
    ensure_dbroot_dirs,
    ensure_module,
    generate_naa,
    loopback_disk,
    stable_naa,
)


class RTSLibError(Exception):
    pass


def fake_rtslib(log: list[tuple], fail: str | None = None) -> types.ModuleType:
    m = types.ModuleType("rtslib_fake")

    def rec(*entry):
        log.append(entry)
        if fail and entry[0] == fail:
            raise RTSLibError(f"{fail} failed")

    class Node:
        def set_attribute(self, k, v):
            rec("attr", type(self).__name__, k, v)

        def delete(self):
            rec("delete", type(self).__name__)

    class UserBackedStorageObject(Node):
        def __init__(self, name, config=None, size=None, wwn=None, hw_max_sectors=None, control=None):
            rec("so", name, config, size, control)
            self.path = f"/sys/kernel/config/target/core/user_7/{name}"

    class FabricModule:
        def __init__(self, name):
            rec("fabric", name)
            self.name = name

    class Target(Node):
        def __init__(self, fm, wwn=None):
            rec("target", fm.name, wwn)
            self.wwn = wwn

    class TPG(Node):
        def __init__(self, t, tag):
            rec("tpg", tag)

        def __setattr__(self, k, v):
            if k == "enable":
                rec("enable", v)
            object.__setattr__(self, k, v)

    class LUN(Node):
        def __init__(self, tpg, lun, so):
            rec("lun", lun)

    class NetworkPortal:
        def __init__(self, tpg, ip, port):
            rec("portal", ip, port)

    class NodeACL:
        def __init__(self, tpg, iqn):
            rec("acl", iqn)
            object.__setattr__(self, "iqn", iqn)

        def __setattr__(self, k, v):  # rtslib-fb's chap_* properties write auth/* in configfs
            rec("acl_attr", self.iqn, k, v)
            object.__setattr__(self, k, v)

    class MappedLUN:
        def __init__(self, acl, mlun, lun):
            rec("mlun", mlun)

    class Existing:
        plugin = "user"

        def __init__(self, name, config, size, hba=3):
            self.name, self.config, self.size = name, config, size
            self.path = f"/sys/kernel/config/target/core/user_{hba}/{name}"

    class RTSRoot:
        storage_objects = [Existing("edisk0", "edif/ctl0", 64 << 20), Existing("other", "edif/x", 1 << 20)]

    m.Existing = Existing
    for c in (UserBackedStorageObject, FabricModule, Target, TPG, LUN, NetworkPortal, NodeACL, MappedLUN,
              RTSRoot):
        setattr(m, c.__name__, c)
    return m


@pytest.fixture
def env(tmp_path: Path):
    cfs = tmp_path / "config"
    (cfs / "target").mkdir(parents=True)
    mods = tmp_path / "module"
    mods.mkdir()
    loaded: list[str] = []

    def modprobe(name: str) -> None:
        loaded.append(name)
        (mods / name).mkdir()

    log: list[tuple] = []
    lio = Lio(fake_rtslib(log), configfs=cfs, dbroot_dirs=(tmp_path / "etc/target", tmp_path / "etc/rts"),
              sys_module=mods, modprobe=modprobe)
    return lio, log, loaded, tmp_path


SPEC = BackstoreSpec("edisk0", "edif", "ctl0", 64 << 20)


def test_cmd_time_out_never_fires_before_the_heartbeat() -> None:
    assert cmd_time_out_for(5.0) == 30
    assert cmd_time_out_for(20.0) == 45
    for park in (0.1, 1, 5, 7.5, 60, 600):
        assert cmd_time_out_for(park) > park
    with pytest.raises(ValueError):
        cmd_time_out_for(0)


def test_spec_validation() -> None:
    assert SPEC.config == "edif/ctl0" and "nl_reply_supported=-1" in SPEC.control
    assert SPEC.attributes == {"cmd_time_out": 30, "qfull_time_out": 30, "tmr_notification": 1}
    bad = [dict(name="a/b"), dict(cfg="x:y"), dict(cfg="a,b"), dict(size=1000), dict(block_size=520),
           dict(cmd_time_out=5), dict(cmd_time_out=-1), dict(qfull_time_out=-2), dict(park_time=0),
           dict(max_data_area_mb=0), dict(subtype=""), dict(cmd_ring_size_mb=9), dict(wwn="a\nb"),
           dict(wwn="x" * 255), dict(wwn="")]
    for kw in bad:
        args = dict(name="n", subtype="s", cfg="c", size=1 << 20) | kw
        with pytest.raises(ValueError):
            BackstoreSpec(**args)
    assert BackstoreSpec("n", "s", "c", 1 << 20, cmd_time_out=0).attributes["cmd_time_out"] == 0
    assert BackstoreSpec("n", "s", "c", 1 << 20, cmd_ring_size_mb=1).control.endswith(",cmd_ring_size_mb=1")


def test_export_spec_validation() -> None:
    with pytest.raises(ValueError):
        VhostExport("naa.123")
    with pytest.raises(ValueError):
        LoopbackExport(wwn="iqn.2003-01.org.example:x")
    with pytest.raises(ValueError):
        IscsiExport("not-an-iqn")
    with pytest.raises(ValueError):
        IscsiExport("iqn.2003-01.org.example:h", portals=(("127.0.0.1", 0),))
    assert VhostExport(generate_naa()).wwpn.startswith("naa.5001405")


def test_backstore_attributes_are_set_before_any_export(env) -> None:
    lio, log, loaded, tmp = env
    bs = lio.create_backstore(SPEC)
    assert bs.uio_name == "tcm-user/7/edisk0/edif/ctl0" and bs.hba_index == 7
    assert log[0] == ("so", "edisk0", "edif/ctl0", 64 << 20,
                      "nl_reply_supported=-1,hw_block_size=512,max_data_area_mb=64")
    assert [e[2] for e in log[1:]] == ["cmd_time_out", "qfull_time_out", "tmr_notification"]
    assert loaded == ["target_core_mod", "target_core_user"]
    assert (tmp / "etc/target").is_dir() and (tmp / "etc/rts").is_dir()
    lio.export(bs, LoopbackExport())
    assert log.index(("lun", 0)) > log.index(("attr", "UserBackedStorageObject", "tmr_notification", 1))
    assert "tcm_loop" in loaded


def test_failed_attribute_removes_the_backstore(env, tmp_path) -> None:
    lio, log, _, _ = env
    lio._rts = fake_rtslib(log, fail="attr")
    with pytest.raises(LioError, match="cmd_time_out"):
        lio.create_backstore(SPEC)
    assert log[-1] == ("delete", "UserBackedStorageObject")


def test_iscsi_demo_mode(env) -> None:
    lio, log, loaded, _ = env
    bs = lio.create_backstore(SPEC)
    exp = lio.export(bs, IscsiExport("iqn.2003-01.org.example:host1", portals=(("0.0.0.0", 3260),)))
    attrs = {e[2]: e[3] for e in log if e[0] == "attr" and e[1] == "TPG"}
    assert attrs == {"authentication": 0, "generate_node_acls": 1, "cache_dynamic_acls": 1,
                     "demo_mode_write_protect": 0}
    assert ("portal", "0.0.0.0", 3260) in log and log[-1] == ("enable", True)
    assert exp.fabric is Fabric.ISCSI and exp.wwn == "iqn.2003-01.org.example:host1"
    assert "iscsi_target_mod" in loaded


def test_iscsi_acls(env) -> None:
    lio, log, _, _ = env
    bs = lio.create_backstore(SPEC)
    lio.export(bs, IscsiExport("iqn.2003-01.org.example:host1", acls=("iqn.2024-01.org.example:vm1",),
                               tpg_attributes=(("default_cmdsn_depth", 64),)))
    attrs = {e[2]: e[3] for e in log if e[0] == "attr" and e[1] == "TPG"}
    assert attrs == {"authentication": 0, "generate_node_acls": 0, "default_cmdsn_depth": 64}
    assert log[-3:] == [("acl", "iqn.2024-01.org.example:vm1"), ("mlun", 0), ("enable", True)]


TARGET = "iqn.2003-01.org.example:host1"
VM1, VM2 = "iqn.2024-01.org.example:vm1", "iqn.2024-01.org.example:vm2"
SECRET, MUTUAL = "s3cr3t-0123456x", "Mutual-98765432"  # 15 and 15 characters


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_iscsi_chap_sets_every_acl_and_turns_authentication_on(env) -> None:
    lio, log, _, tmp = env
    chap = IscsiChap("edif-vm", _secret_file(tmp / "chap", SECRET))
    bs = lio.create_backstore(SPEC)
    lio.export(bs, IscsiExport(TARGET, acls=(VM1, VM2), chap=chap))
    attrs = {e[2]: e[3] for e in log if e[0] == "attr" and e[1] == "TPG"}
    assert attrs == {"authentication": 1, "generate_node_acls": 0}
    acl_log = [e for e in log if e[0] in ("acl", "acl_attr", "mlun")]
    assert acl_log == [
        ("acl", VM1), ("acl_attr", VM1, "chap_userid", "edif-vm"), ("acl_attr", VM1, "chap_password", SECRET),
        ("mlun", 0),
        ("acl", VM2), ("acl_attr", VM2, "chap_userid", "edif-vm"), ("acl_attr", VM2, "chap_password", SECRET),
        ("mlun", 0),
    ]
    assert log[-1] == ("enable", True)


def test_iscsi_mutual_chap_sets_the_targets_credentials_too(env) -> None:
    lio, log, _, tmp = env
    chap = IscsiChap("edif-vm", _secret_file(tmp / "chap", SECRET), "edifd-ctl0",
                     _secret_file(tmp / "mutual", MUTUAL))
    bs = lio.create_backstore(SPEC)
    lio.export(bs, IscsiExport(TARGET, acls=(VM1,), chap=chap))
    assert {e[2]: e[3] for e in log if e[0] == "acl_attr"} == {
        "chap_userid": "edif-vm", "chap_mutual_userid": "edifd-ctl0",
        "chap_password": SECRET, "chap_mutual_password": MUTUAL}
    assert ("attr", "TPG", "authentication", 1) in log


def test_iscsi_chap_secret_refused_before_anything_is_created(env) -> None:
    lio, log, _, tmp = env
    bs = lio.create_backstore(SPEC)
    before = list(log)
    readable = tmp / "chap"
    readable.write_text(SECRET)
    readable.chmod(0o644)
    with pytest.raises(LioError) as e:
        lio.export(bs, IscsiExport(TARGET, acls=(VM1,), chap=IscsiChap("edif-vm", readable)))
    assert f"run chmod g-r,o-r {readable}" in str(e.value) and SECRET not in str(e.value)
    assert [x for x in log if x not in before and x[0] != "fabric"] == []  # no target, no TPG, no ACL


def test_iscsi_chap_secret_never_in_errors_logs_or_reprs(env, caplog) -> None:
    """rtslib refusing the password (here with the value in its message) gives a LioError without it;
    the export, its spec and the log hold paths and names only."""
    lio, log, _, tmp = env
    caplog.set_level("DEBUG")
    chap = IscsiChap("edif-vm", _secret_file(tmp / "chap", SECRET))
    bs = lio.create_backstore(SPEC)
    exp = lio.export(bs, IscsiExport(TARGET, acls=(VM1,), chap=chap))
    assert SECRET not in repr(exp) + repr(chap) + repr(IscsiExport(TARGET, acls=(VM1,), chap=chap))
    rts = fake_rtslib(log)

    class LeakyACL(rts.NodeACL):
        def __setattr__(self, k, v):
            if k == "chap_password":
                raise RTSLibError(f"cannot write {v!r} to auth/password")
            super().__setattr__(k, v)

    rts.NodeACL = LeakyACL
    lio._rts = rts
    with pytest.raises(LioError) as e:
        lio.export(bs, IscsiExport(TARGET, acls=(VM1,), chap=chap))
    assert "chap password of ACL" in str(e.value) and "<secret>" in str(e.value)
    assert SECRET not in str(e.value) and SECRET not in caplog.text
    assert log[-1] == ("delete", "Target")  # the half-made export is removed


def test_iscsi_chap_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per node ACL"):
        IscsiExport(TARGET, chap=IscsiChap("u", tmp_path / "s"))
    with pytest.raises(ValueError, match="both mutual_user and mutual_secret_file"):
        IscsiChap("u", tmp_path / "s", mutual_user="m")
    with pytest.raises(ValueError, match="CHAP user"):
        IscsiChap("two words", tmp_path / "s")


def test_stable_naa_is_a_function_of_its_parts() -> None:
    a = stable_naa("vhost", "0123456789abcdef0123456789abcdef", "data0")
    assert a == stable_naa("vhost", "0123456789abcdef0123456789abcdef", "data0")
    assert a.startswith("naa.5001405") and len(a) == 20 and int(a[4:], 16)
    assert a != stable_naa("vhost", "0123456789abcdef0123456789abcdef", "data1")
    assert a != stable_naa("vhost", "fedcba9876543210fedcba9876543210", "data0")


def test_vhost_wwpn(env) -> None:
    lio, log, loaded, _ = env
    bs = lio.create_backstore(SPEC)
    exp = lio.export(bs, VhostExport("naa.5001405abcdef012"))
    assert ("target", "vhost", "naa.5001405abcdef012") in log and exp.wwn == "naa.5001405abcdef012"
    assert "vhost_scsi" in loaded


def test_failed_export_removes_the_target(env) -> None:
    lio, log, _, _ = env
    bs = lio.create_backstore(SPEC)
    lio._rts = fake_rtslib(log, fail="lun")
    with pytest.raises(LioError, match="LUN"):
        lio.export(bs, LoopbackExport())
    assert log[-1] == ("delete", "Target")


def test_setup_order_and_rollback(env) -> None:
    lio, log, _, _ = env
    order: list[str] = []

    class H:
        def stop(self) -> None:
            order.append("stop")

    def start(bs):
        order.append(f"start {bs.uio_name}")
        log.append(("handler",))
        return H()

    bs, h, exp = lio.setup(SPEC, LoopbackExport(), start)
    kinds = [e[0] for e in log]
    assert kinds.index("handler") < kinds.index("target") and order == ["start tcm-user/7/edisk0/edif/ctl0"]
    lio._rts = fake_rtslib(log, fail="lun")
    with pytest.raises(LioError):
        lio.setup(SPEC, LoopbackExport(), start)
    assert order[-1] == "stop" and log[-1] == ("delete", "UserBackedStorageObject")


def test_configfs_not_mounted_names_the_mount_command(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(LioError, match="mount -t configfs configfs"):
        check_configfs(tmp_path / "config", mounts)
    mounts.write_text(f"configfs {tmp_path / 'config'} configfs rw 0 0\n")
    with pytest.raises(LioError, match="modprobe target_core_mod"):
        check_configfs(tmp_path / "config", mounts)


def test_missing_module_names_the_module(tmp_path: Path) -> None:
    def no_modprobe(name: str) -> None:
        raise FileNotFoundError(2, "No such file or directory", "modprobe")

    with pytest.raises(LioError, match="modprobe tcm_loop"):
        ensure_module("tcm_loop", tmp_path, no_modprobe)

    def modprobe(name: str) -> None:
        raise OSError(f"modprobe: FATAL: Module {name} not found")

    with pytest.raises(LioError, match="kernel module tcm_loop .*modprobe tcm_loop"):
        ensure_module("tcm_loop", tmp_path, modprobe)
    calls: list[str] = []
    ensure_module("vhost_scsi", tmp_path, calls.append)  # built-in: no /sys/module entry needed
    assert calls == ["vhost_scsi"]
    (tmp_path / "uio").mkdir()
    ensure_module("uio", tmp_path, modprobe)  # loaded: modprobe not called


def test_prepare_reports_unmounted_configfs(tmp_path: Path) -> None:
    lio = Lio(fake_rtslib([]), configfs=tmp_path / "nocfg", sys_module=tmp_path,
              modprobe=lambda n: (tmp_path / n).mkdir())
    with pytest.raises(LioError, match="configfs is not mounted"):
        lio.create_backstore(SPEC)


def test_dbroot_dirs_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LioError, match="cannot create"):
        ensure_dbroot_dirs([tmp_path / "file" / "target"])


def test_loopback_disk_found_from_the_tpg_address(tmp_path: Path) -> None:
    cfs, sysfs = tmp_path / "cfg", tmp_path / "sys"
    tpgt = cfs / "target" / "loopback" / "naa.5001405000000001" / "tpgt_1"
    tpgt.mkdir(parents=True)
    (tpgt / "address").write_text("2:0:1\n")
    (sysfs / "bus" / "scsi" / "devices" / "2:0:1:0" / "block" / "sdb").mkdir(parents=True)
    from edifd.tcmu.lio import Export

    exp = Export(Fabric.LOOPBACK, "naa.5001405000000001", 1, 0, None, None)
    assert loopback_disk(exp, cfs, sysfs, timeout=0) == Path("/dev/sdb")
    with pytest.raises(LioError):
        loopback_disk(Export(Fabric.LOOPBACK, "naa.5001405000000002", 1, 0, None, None), cfs, sysfs, 0)


def test_find_backstore_for_reattach(env) -> None:
    lio, log, _, _ = env
    bs = lio.find_backstore(SPEC)
    assert bs is not None and bs.uio_name == "tcm-user/3/edisk0/edif/ctl0"
    assert lio.find_backstore(BackstoreSpec("absent", "edif", "ctl0", 1 << 20)) is None
    with pytest.raises(LioError, match="does not match"):
        lio.find_backstore(BackstoreSpec("other", "edif", "y", 1 << 20))
