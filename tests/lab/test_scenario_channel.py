"""The channel on real kernels: edif-agent in VM-S, edifd in VM-H, the control LUN through QEMU's iSCSI
initiator as scsi-block. One run of lab/scenario_channel.py (two boots) feeds every test here.

Lost and duplicated messages are counted by request ids and upstream sequence numbers on the agent
side (edif-agent ping) and by edifd's channel counters on the host side. The VM shares and the
summary stay in lab/out/channel/<pid>/. EDIF_LAB_CHANNEL_COUNT changes the 1000 messages per phase.
"""

from __future__ import annotations

import json
import os

import pytest

from lab.control import run_dir
from lab.scenario_channel import WWPN, run_channel_lab

pytestmark = pytest.mark.lab

COUNT = int(os.environ.get("EDIF_LAB_CHANNEL_COUNT", "1000"))


@pytest.fixture(scope="module")
def lab(lab_image):
    out = run_dir("channel")  # the VM shares and summary.json stay in lab/out/channel/<pid>/ (CI artifacts)
    s = run_channel_lab(lab_image, out, count=COUNT)
    (out / "summary.json").write_text(json.dumps(s, indent=1, sort_keys=True, default=str))
    assert not s.get("error"), s.get("error")
    return s


def report(lab, phase):
    p = lab["vm_s"][phase]
    return p, p.get("report") or {}


def assert_clean(rep, n):
    assert (rep["sent"], rep["received"], rep["in_order"]) == (n, n, n), rep
    assert (rep["lost"], rep["duplicates"], rep["unexpected"], rep["out_of_order"]) == (0, 0, 0, 0), rep
    assert (rep["seq_gaps"], rep["seq_repeats"]) == (0, 0), rep


def test_udev_rule_applies_to_the_control_disk(lab):
    u = lab["vm_s"]["udev"]
    assert u["nomerges"] == "2" and u["read_ahead_kb"] == "0" and u["timeout"] == "600"
    assert "[none]" in u["scheduler"]
    assert u["properties"]["UDISKS_IGNORE"] == "1"
    assert u["properties"]["UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG"] == "1"


def test_agent_discovers_the_control_disk_and_its_port(lab):
    st, rep = report(lab, "status")
    assert st["rc"] == 0
    (disk,) = rep["disks"]
    assert disk["port"] == WWPN and disk["serial"] == "EDIFLAB-CTL0"
    assert disk["device"] == f"/dev/{lab['vm_s']['ctl_disk']}"


def test_ping_1000_over_iscsi_in_order_once(lab):
    p, rep = report(lab, "ping")
    assert p["rc"] == 0, p.get("stderr")
    assert_clean(rep, COUNT)
    assert rep["resent"] == 0
    assert p["host_delta"]["messages_in"] == COUNT  # the host acted on each request exactly once
    assert rep["rtt_ms"]["n"] == COUNT


def test_agent_sigkill_mid_stream(lab):
    a, rep = report(lab, "agent_restart")
    assert 0 < a["killed_at_sent"] < COUNT
    assert a["rc"] == 0, a.get("stderr")
    assert_clean(rep, COUNT)
    hd = a["host_delta"]
    assert COUNT <= hd["messages_in"] <= COUNT + rep["resent"]
    assert hd.get("rejected_replay", 0) == 0


def test_edifd_sigkill_mid_stream(lab):
    k, rep = report(lab, "edifd_kill")
    assert 0 < k["killed_at_sent"] < COUNT
    assert "error" not in k["kill"] and k["kill"]["restart_s"] > 0
    assert k["rc"] == 0, k.get("stderr")
    assert_clean(rep, COUNT)
    assert rep["channel"]["handshakes"] >= 2  # the agent noticed the new edifd and authenticated again
    # The restarted edifd acted on what came after the restart, once each.
    assert 0 < k["host_after_restart"]["messages_in"] <= COUNT - k["killed_at_sent"] + rep["resent"] + 1


def test_wrong_key_writer_is_rejected_without_effect(lab):
    w = lab["vm_s"]["wrong_key"]
    assert w["wrong"]["rc"] == 5  # channel not established
    hd = w["host_delta_wrong"]
    assert sum(v for k, v in hd.items() if k.startswith("rejected_")) >= 1
    assert hd.get("messages_in", 0) == 0 and hd.get("epochs", 0) == 0
    assert w["good_after"]["rc"] == 0


def test_rtt_ratio_is_measured(lab):
    b = lab["vm_s"]["bench"]
    assert b["read_4k_ms"]["n"] == 500 and b["ratio"]["p50"] > 0


def test_channel_lab_has_no_problems(lab):
    assert lab["problems"] == []
