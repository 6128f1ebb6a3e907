"""The edifd lab scenario's verdict logic, on synthetic phase results (no VM)."""

import copy

from lab.scenario_luns import SUITES, parse_cunit, problems, verdicts

GOOD = {
    "port": 40000,
    "vms_data_in_backing_file": True,
    "vm_h_rc": 0,
    "phases": {
        "vmh_loopback": {
            "loop_dev": "/dev/sda",
            "loop_inq": {"vendor": "EDIF", "product": "LAB DISK", "serial": "EDIFLAB-LOOP0", "rc": 0},
            "loop_io": {"match": True, "backing_match": True, "write_MBps": 30, "read_MBps": 30},
            "at_s": 40.0,
        },
        "kill_restart": {
            "io_errors": [],
            "mismatches": 0,
            "verify_failures": 0,
            "blocks_verified": 60,
            "ops_total": 60,
            "restart_s": 3.0,
            "at_s": 41.0,
        },
        "host_iscsi_inq": {"rc": 0, "stdout": "Vendor:EDIF Product:LAB DISK", "at_s": 42.0},
        "iscsi_test_cu": {**{s: {"ran": 5, "passed": 5, "failed": 0} for s in SUITES}, "at_s": 90.0},
        "vms_iscsi": {"rc": 0, "sg_inq": {"vendor": "EDIF", "product": "LAB DISK"}, "io": {"match": True}},
        "parked_stop": {
            "parked_before_stop": 4,
            "readers_stuck": 0,
            "edifd_rc": 0,
            "edifd_stop_s": 0.3,
            "readers": ["completed"] * 4,
            "backstores_left": [],
            "uio_left": [],
            "teardown_rc": 0,
        },
    },
}


def test_all_good_has_no_problems_and_passes_every_line():
    assert problems(GOOD) == []
    v = verdicts({**GOOD, "problems": []})
    assert len(v) == 6 and all(ok for _, ok, _ in v)
    assert "50/50 tests passed" in dict((n, d) for n, _, d in v)["libiscsi iscsi-test-cu, 10 SCSI suites"]


def test_each_failure_is_named():
    cases = [
        (("vmh_loopback", "loop_inq", "vendor"), "LIO-ORG", "tcm_loop INQUIRY"),
        (("kill_restart", "mismatches"), 1, "SIGKILL"),
        (("iscsi_test_cu", "Inquiry", "failed"), 2, "iscsi-test-cu SCSI.Inquiry"),
        (("parked_stop", "readers_stuck"), 1, "stop with parked READs"),
        (("parked_stop", "backstores_left"), ["disk0"], "stop with parked READs"),
    ]
    for path, value, needle in cases:
        s = copy.deepcopy(GOOD)
        d = s["phases"]
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        found = problems(s)
        assert any(needle in p for p in found), (path, found)


def test_parse_cunit_summary():
    out = (
        "Run Summary:    Type  Total    Ran Passed Failed Inactive\n"
        "              suites      1      1    n/a      0        0\n"
        "               tests      7      7      5      2        0\n"
    )
    assert parse_cunit(out) == {"total": 7, "ran": 7, "passed": 5, "failed": 2, "inactive": 0}
    assert parse_cunit("garbage") == {}
