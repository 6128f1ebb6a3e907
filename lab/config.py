"""Configuration that ``lab up`` writes into VM-H's share for the edifd daemon.

PLACEHOLDER owned by the lead: ``edifd_lab_config`` must return the TOML text that
``python3 -m edifd run --config /lab/edifd.toml --ready-file /lab/ready`` understands. The lab only relies on
the signature and on edifd then exporting the control LUN over iSCSI as ``iqn`` / LUN ``lun`` on
0.0.0.0:``portal_port`` inside VM-H (the host forwards 127.0.0.1:<port> to it) and creating the ready file
once it serves.
"""

from __future__ import annotations

import json


def _s(v: str) -> str:
    # A JSON string literal is a valid TOML basic string for the characters we allow here.
    return json.dumps(v)


def edifd_lab_config(
    *, iqn: str, lun: int = 0, portal_port: int = 3260, state_dir: str = "/lab/state"
) -> str:
    """TOML for edifd inside VM-H. Draft keys until the lead fills in the real schema."""
    if not iqn.startswith("iqn.") or any(c in iqn for c in " \"'\\\n"):
        raise ValueError(f"bad iqn {iqn!r}")
    if not 0 <= lun < 256 or not 0 < portal_port < 65536:
        raise ValueError("lun or portal_port out of range")
    return (
        "# written by `python3 -m lab up` (lab/config.py: edifd_lab_config); lab VM-H, not for production\n"
        "[daemon]\n"
        f"state_dir = {_s(state_dir)}\n"
        "\n"
        "[export.iscsi]\n"
        f"iqn = {_s(iqn)}\n"
        f"lun = {lun}\n"
        f'portal = "0.0.0.0:{portal_port}"\n'
        "demo_mode = true\n"
    )
