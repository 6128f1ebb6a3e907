"""lab.examples: the lab's configurations are the commented examples with the lab's own values, written
back as TOML that reads as what was meant."""

from __future__ import annotations

import tomllib

import pytest

from lab.examples import derive, dumps, example, first


@pytest.mark.parametrize("name", ["edifd.toml", "agent.toml", "target.toml"])
def test_every_example_survives_the_writer(name):
    data = example(name)
    assert tomllib.loads(dumps(data)) == data


def test_derive_keeps_the_template_and_overrides_only_what_it_names():
    ctl = first(example("edifd.toml")["lun"], type="control")
    lab = derive(ctl, drop=("serial",), name="ctl7", export={"portal": "0.0.0.0:3260"})
    assert lab["name"] == "ctl7" and "serial" not in lab and lab["type"] == "control"
    assert lab["export"]["portal"] == "0.0.0.0:3260"
    assert {k: v for k, v in lab["export"].items() if k != "portal"} == {
        k: v for k, v in ctl["export"].items() if k != "portal"}
    assert first(example("edifd.toml")["lun"], type="control") == ctl  # the template is not changed


def test_nested_tables_of_an_array_of_tables_stay_with_their_element():
    text = dumps({"lun": [{"name": "a", "export": {"fabric": "iscsi"}}, {"name": "b"}]})
    assert tomllib.loads(text) == {"lun": [{"name": "a", "export": {"fabric": "iscsi"}}, {"name": "b"}]}


def test_the_edif_labs_edifd_config_is_the_example_with_the_labs_values():
    from edifd.config import parse_config
    from lab.guest.host_edif import CHAP_USER, CTL_IQNS, EDIF_VM_IQN, config_text

    text = config_text(("10.0.2.2:4001", "10.0.2.2:4002"), ("2100001b32000e01", "2100001b32000e02"), 300.0)
    cfg = parse_config(tomllib.loads(text), "lab")  # what edifd itself accepts, every problem at once
    ctl = [lun for lun in cfg.luns if lun.type == "control"]
    assert [lun.export.iqn for lun in ctl] == list(CTL_IQNS)
    assert all(lun.export.initiators == (EDIF_VM_IQN,) and lun.export.chap_user == CHAP_USER
               and lun.export.mode == "chap" for lun in ctl)
    assert [p.security for p in cfg.hba.ports] == [True, True] and cfg.metrics is not None
    template = first(example("edifd.toml")["lun"], type="control")
    assert all(k in tomllib.loads(text)["lun"][0] for k in template)


def test_the_edif_labs_agent_config_is_the_example_with_the_labs_values(tmp_path):
    from edifd.secapp.config import load_config
    from lab.scenario_edif import REKEY_LIFETIME, agent_config

    (tmp_path / "psk").mkdir()
    psk = tmp_path / "psk" / "a"
    psk.write_text("hex:" + "ab" * 32)
    psk.chmod(0o600)
    conf = tmp_path / "agent-p0.toml"
    conf.write_text(agent_config(0, 0x2100001B32000E01, "psk/a"))
    cfg = load_config(conf)  # the agent's own loader: every key the lab writes is one it knows
    assert list(cfg.peers) == [0x2100001B32000E01] and cfg.rekey.lifetime == REKEY_LIFETIME
    text = tomllib.loads(conf.read_text())
    assert text["targets"]["2100001b32000e01"] == {"psk_file": "psk/a"}
