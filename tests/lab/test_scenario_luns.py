"""edifd on a real kernel: LIO + TCMU in VM-H under QEMU/TCG, used from inside VM-H,
from the host and from VM-S.

One run of the scenario (two boots) feeds every test here; see lab/scenario_luns.py for the phases.
"""

from __future__ import annotations

import pytest

from lab.scenario_luns import STOP_LIMIT_S, SUITES, run_edifd_lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def scenario(lab_image, tmp_path_factory):
    s = run_edifd_lab(lab_image, tmp_path_factory.mktemp("edifd-lab"))
    assert not s.get("error"), s.get("error")
    return s


def test_tcm_loop_lun_shows_our_identity_and_round_trips(scenario):
    lb = scenario["phases"]["vmh_loopback"]
    inq = lb["loop_inq"]
    assert (inq["vendor"], inq["product"], inq["serial"]) == ("EDIF", "LAB DISK", "EDIFLAB-LOOP0")
    assert inq["rc"] == 0
    assert lb["loop_io"]["len"] == 1 << 20
    assert lb["loop_io"]["match"] and lb["loop_io"]["backing_match"]


def test_sigkill_and_restart_under_writes_loses_nothing(scenario):
    kr = scenario["phases"]["kill_restart"]
    assert kr["io_errors"] == []
    assert kr["mismatches"] == 0
    assert kr["ops_total"] > kr["ops_before_kill"]  # I/O went on after the restart
    assert kr["blocks_verified"] > 0 and kr["verify_failures"] == 0


def test_host_sees_our_identity_over_iscsi(scenario):
    hi = scenario["phases"]["host_iscsi_inq"]
    assert hi["rc"] == 0
    assert "EDIF" in hi["stdout"] and "LAB DISK" in hi["stdout"]


@pytest.mark.parametrize("suite", SUITES)
def test_libiscsi_suite_passes(scenario, suite):
    r = scenario["phases"]["iscsi_test_cu"][suite]
    assert r.get("ran", 0) > 0, r
    assert r["failed"] == 0 and r["passed"] == r["ran"], r


def test_vm_s_uses_the_lun_through_qemu_iscsi(scenario):
    vs = scenario["phases"]["vms_iscsi"]
    assert vs["rc"] == 0
    assert (vs["sg_inq"]["vendor"], vs["sg_inq"]["product"]) == ("EDIF", "LAB DISK")
    assert vs["io"]["match"]
    assert scenario["vms_data_in_backing_file"]


def test_stop_with_parked_reads_completes_and_lun_deletes(scenario):
    ps = scenario["phases"]["parked_stop"]
    assert ps["parked_before_stop"] == 4
    assert ps["edifd_rc"] == 0
    # A hang detector, not a performance figure: stop must not wait for the parked READs' heartbeat.
    assert ps["edifd_stop_s"] < STOP_LIMIT_S
    assert ps["readers_stuck"] == 0 and ps["readers"] == ["completed"] * 4
    assert ps["ctl0_delete_s"] is not None
    # then edifd --teardown removes every other LIO object it served, without hanging
    assert ps["teardown_rc"] == 0 and ps["backstores_left"] == [] and ps["uio_left"] == []


def test_scenario_has_no_problems(scenario):
    assert scenario["problems"] == []
