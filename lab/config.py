"""Configuration that ``lab up --backend edifd`` writes into VM-H's share for the edifd daemon.

The guest runs ``python3 -m edifd run --config /lab/edifd.toml --ready-file /lab/ready``. The lab relies only
on this function's signature and on edifd then exporting one LUN over iSCSI as ``iqn`` (LUN 0) on
0.0.0.0:``portal_port`` inside VM-H (the host forwards 127.0.0.1:<port> to it), and writing the ready file
once it serves. The TOML follows edifd/config.py as of this writing; the lead owns that schema.
"""

from __future__ import annotations

import json
import re

_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[^\s\"'\\]+)?$")


def _s(v: str) -> str:
    # A JSON string literal is a valid TOML basic string for the characters we allow here.
    return json.dumps(v)


def edifd_lab_config(
    *, iqn: str, lun: int = 0, portal_port: int = 3260, state_dir: str = "/tmp/edifd", size: str = "64MiB"
) -> str:
    """TOML for edifd inside VM-H: one file-backed LUN exported over iSCSI in demo mode.

    ``state_dir`` is on the guest's tmpfs on purpose: a TCMU backing file on the 9p share would be slow.
    """
    if not _IQN.match(iqn):
        raise ValueError(f"not an iSCSI qualified name: {iqn!r}")
    if lun != 0:
        raise ValueError("edifd exports each LUN as LUN 0 of its own target; only lun=0 is meaningful")
    if not 0 < portal_port < 65536:
        raise ValueError(f"portal_port out of range: {portal_port}")
    return (
        "# written by `python3 -m lab up --backend edifd` (lab/config.py); lab VM-H only, never production\n"
        "[daemon]\n"
        f"state_dir = {_s(state_dir)}\n"
        'log_level = "info"\n'
        "\n"
        "[[lun]]\n"
        'name = "ctl0"\n'
        'type = "file"\n'
        f"size = {_s(size)}\n"
        f"path = {_s(state_dir + '/ctl0.img')}\n"
        "\n"
        "[lun.export]\n"
        'fabric = "iscsi"\n'
        f"iqn = {_s(iqn)}\n"
        f'portal = "0.0.0.0:{portal_port}"\n'
        "demo_mode = true  # any initiator, no CHAP: QEMU's libiscsi in VM-S and iscsi-inq on the host\n"
        "insecure_demo = true  # 0.0.0.0 in VM-H: reachable only through the 127.0.0.1 forward\n"
    )
