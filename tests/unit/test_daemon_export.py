"""What edifd asks LIO for, per export in the configuration (edifd.daemon.export_spec): the node ACLs and
the CHAP settings reach the iSCSI export (the lab once found an ACL'd export that did not ask for CHAP)."""

from __future__ import annotations

import tomllib

from edifd.config import parse_config
from edifd.daemon import export_spec
from edifd.tcmu.lio import IscsiExport

BASE = """
[[lun]]
name = "ctl0"
size = "16MiB"
[lun.export]
fabric = "iscsi"
iqn = "iqn.2026-12.io.edifd.test:ctl0"
portal = "10.0.0.1:3260"
"""


def spec_of(extra: str) -> IscsiExport:
    cfg = parse_config(tomllib.loads(BASE + extra), "test")
    spec = export_spec(cfg.luns[0])
    assert isinstance(spec, IscsiExport)
    return spec


def test_acl_and_chap_reach_the_iscsi_export():
    spec = spec_of('initiators = ["iqn.2026-12.io.edifd.test:vm"]\nchap_user = "vm"\n'
                   'chap_secret_file = "/etc/edifd/vm.chap"\nmutual_user = "host"\n'
                   'mutual_secret_file = "/etc/edifd/host.chap"\n')
    assert spec.acls == ("iqn.2026-12.io.edifd.test:vm",)
    assert spec.chap is not None and (spec.chap.user, spec.chap.mutual_user) == ("vm", "host")
    assert str(spec.chap.secret_file) == "/etc/edifd/vm.chap"


def test_acls_without_chap_and_demo_mode():
    spec = spec_of('initiators = ["iqn.2026-12.io.edifd.test:vm"]\n')
    assert spec.acls == ("iqn.2026-12.io.edifd.test:vm",) and spec.chap is None
    demo = spec_of("demo_mode = true\ninsecure_demo = true\n")
    assert demo.acls == () and demo.chap is None
