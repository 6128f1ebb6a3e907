import pytest

from edifd.config import ConfigError, load_config, parse_config, parse_size

GOOD = """
[daemon]
state_dir = "/srv/edifd"
park_time = 2.5
cmd_time_out = 0

[[lun]]
name = "lab0"
size = "64MiB"
vendor = "EDIF"
product = "LABDISK"
[lun.export]
fabric = "iscsi"
iqn = "iqn.2026-11.io.edifd:lab0"
portal = "0.0.0.0:3260"
demo_mode = true
insecure_demo = true

[[lun]]
name = "local1"
size = 1048576
block_size = 4096
path = "/tmp/local1.img"
[lun.export]
fabric = "loopback"
"""


def test_good_config(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(GOOD)
    c = load_config(p)
    assert c.daemon.park_time == 2.5 and c.daemon.cmd_time_out == 0
    a, b = c.luns
    assert (a.name, a.size, a.block_size, a.product) == ("lab0", 64 << 20, 512, "LABDISK")
    assert str(a.path) == "/srv/edifd/lab0.img"
    assert a.export.fabric == "iscsi" and a.export.portal == ("0.0.0.0", 3260) and a.export.demo_mode
    assert a.export.mode == "insecure-demo"
    assert b.block_size == 4096 and str(b.path) == "/tmp/local1.img" and b.export.fabric == "loopback"
    assert a.serial == "EDIF-lab0"


@pytest.mark.parametrize("text,needle", [
    ("[[lun]]\nname='a'\n", "lun[0].size: required"),
    ("[[lun]]\nname='a b'\nsize='1M'\n", "lun[0].name"),
    ("[[lun]]\nname='a'\nsize='1M'\nblock_size=1024\n", "block_size: 512 or 4096"),
    ("[[lun]]\nname='a'\nsize='1000'\n", "not a multiple"),
    ("[[lun]]\nname='a'\nsize='lots'\n", "expected a size"),
    ("[[lun]]\nname='a'\nsize='1M'\nvendor='TOOLONGVENDOR'\n", "vendor"),
    ("[[lun]]\nname='a'\nsize='1M'\n[lun.export]\nfabric='fcoe'\n", "fabric: must be one of"),
    ("[[lun]]\nname='a'\nsize='1M'\n[lun.export]\nfabric='iscsi'\n", "needs initiators"),
    ("[[lun]]\nname='a'\nsize='1M'\n[lun.export]\nfabric='iscsi'\ndemo_mode=true\nportal='x'\n", "portal"),
    ("[[lun]]\nname='a'\nsize='1M'\n[[lun]]\nname='a'\nsize='1M'\n", "duplicate name"),
    ("[daemon]\npark_time=5\ncmd_time_out=8\n", "cmd_time_out"),
    ("[daemon]\nbogus=1\n", "daemon.bogus: unknown key"),
    ("[daemon]\npark_time='5'\n", "expected int/float"),
])
def test_bad_config_names_the_key(text, needle):
    import tomllib
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text))
    assert needle in str(e.value)


def test_all_problems_reported_at_once():
    import tomllib
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads("[daemon]\nlog_level='loud'\n[[lun]]\nname='a'\n"))
    assert len(e.value.problems) == 2


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


@pytest.mark.parametrize(
    "v,n", [("4096", 4096), ("1K", 1024), ("64MiB", 64 << 20), ("2G", 2 << 30), (512, 512)]
)
def test_parse_size(v, n):
    assert parse_size(v) == n


@pytest.mark.parametrize("v", ["0", -1, True, "1X", 1.5])
def test_parse_size_rejects(v):
    with pytest.raises(ValueError):
        parse_size(v)


def test_every_lun_type_has_a_kind():
    from edifd.config import LUN_TYPES
    from edifd.lun_kinds import KINDS

    assert set(KINDS) == set(LUN_TYPES)


def test_relative_paths_are_relative_to_the_config_files_directory(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    p = conf_dir / "edifd.toml"
    p.write_text('[daemon]\nstate_dir = "state"\n'
                 '[[lun]]\nname = "d"\nsize = "1MiB"\npath = "disks/d.img"\n'
                 '[[lun]]\nname = "e"\nsize = "1MiB"\n'
                 '[[lun]]\nname = "c"\ntype = "control"\nsize = "16MiB"\nchannel_key = "keys/vm1.key"\n'
                 '[[hba.port]]\nname = "p0"\nwwpn = "21:00:00:24:ff:00:00:01"\n'
                 'wwnn = "20:00:00:24:ff:00:00:01"\n'
                 'target = "127.0.0.1:3260"\npcap = "p0.pcap"\n')
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    cfg = load_config("etc/edifd.toml")
    assert cfg.daemon.state_dir == conf_dir / "state"
    d, e, c = cfg.luns
    assert d.path == conf_dir / "disks" / "d.img"
    assert e.path == conf_dir / "state" / "e.img"  # no path written: NAME.img in the state directory
    assert c.channel_key == conf_dir / "keys" / "vm1.key"
    assert cfg.hba.ports[0].pcap == conf_dir / "p0.pcap"
