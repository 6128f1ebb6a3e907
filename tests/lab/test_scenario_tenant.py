"""Tenant data path on a real kernel: edif-target on the lab host, edifd's software HBA in VM-H,
a tenant disk served through LIO/TCMU, 64 MiB written and read back with the FC link dropped half way."""

from __future__ import annotations

import pytest

from lab.scenario_tenant import run_tenant_lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def tenant(lab_image, tmp_path_factory):
    return run_tenant_lab(lab_image, tmp_path_factory.mktemp("tenant-lab"), mib=64)


def test_tenant_disk_appears_with_the_targets_capacity(tenant):
    g = tenant["guest"]
    assert not g.get("error"), g.get("error")
    assert g["dev"].startswith("/dev/sd")
    assert g["check_config"]["rc"] == 0


def test_64_mib_round_trip_across_a_link_reset(tenant):
    io = tenant["guest"]["io"]
    assert io["mib"] == 64
    assert "link_reset_at_s" in tenant  # the host really dropped the FC link mid-write
    assert io["write_errors"] == [] and io["read_errors"] == []
    assert io["mismatched_mib"] == []


def test_target_backing_file_holds_the_pattern_byte_for_byte(tenant):
    assert tenant["backing_mismatched_mib"] == []
    assert tenant["backing_sha256_ok"]


def test_edifd_stopped_cleanly(tenant):
    assert tenant["guest"].get("edifd_rc") == 0
    assert tenant["vm_h_rc"] == 0
    assert tenant["problems"] == []
