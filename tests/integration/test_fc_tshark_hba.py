"""tshark decodes the pcap the HBA itself writes during a real loopback login + I/O run.

Skips without tshark, fails under CI=true. Fields: FLOGI/PLOGI (security bit), PRLI and its ACC,
FCP_CMND (LUN, FCP_DL, direction, CDB), FCP_XFER_RDY, FCP_DATA relative offsets (2048-byte
frames), FCP_RSP status/residual, and a good FC CRC on every frame (linktype 225).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from edifd.hba import Hba, PortConfig, Timers
from edifd.scsi import ScsiCommand, cdb
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer

T_WWPN, T_WWNN = 0x2100001B32000002, 0x2000001B32000002
I_WWPN, I_WWNN = 0x2100001B320000A1, 0x2000001B320000A1
FIELDS = ["fc.crc.status", "fc.r_ctl", "fc.type", "fc.f_ctl", "fc.ox_id", "fc.rx_id", "fc.relative_offset",
          "fcels.opcode", "fcels.cmn.security", "fcels.npname", "fcels.fcpflags", "fcels.prliloflags",
          "fcp.lun", "fcp.dl", "fcp.rddata", "fcp.wrdata", "scsi_sbc.opcode", "scsi_sbc.rdwr10.lba",
          "fcp.data_ro", "fcp.burstlen", "fcp.status", "fcp.resid", "fcp.rsp.flags.resid_under"]


def capture(tmp: Path) -> Path:
    pcap = tmp / "hba.pcap"

    async def body() -> None:
        luns = (LunConfig(0, str(tmp / "lun0.img"), 8 << 20),)
        ts = TargetServer(TargetConfig((TargetPortConfig("t0", T_WWPN, T_WWNN, ("127.0.0.1", 0), luns),)))
        await ts.start()
        hba = Hba([PortConfig("p0", I_WWPN, I_WWNN, ts.ports[0].address, security=True, pcap_path=str(pcap))],
                  Timers(io_timeout=5.0))
        await hba.start()
        try:
            assert await hba.wait_ready(T_WWPN, 5.0)
            payload = bytes(range(256)) * 16
            w = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.write(0x100, 8), data_out=payload))
            r = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.read(0x100, 8), data_in_len=4608))  # 512 over
            assert w.ok and r.ok and r.data_len == 4096
        finally:
            await hba.stop()
            await ts.stop()

    asyncio.run(asyncio.wait_for(body(), 20))
    return pcap


def test_tshark_decodes_the_hba_trace(tmp_path: Path, tshark: str) -> None:
    pcap = capture(tmp_path)
    cmd = [tshark, "-r", str(pcap), "-n", "-o", "fc.reassemble:FALSE", "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=f"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    rows = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]
    assert rows and all(r["fc.crc.status"] == "1" for r in rows)  # every FC CRC Good

    def find(**want: str) -> list[dict[str, str]]:
        return [r for r in rows if all(r[k.replace("__", ".")] == v for k, v in want.items())]

    (flogi,) = find(fc__r_ctl="0x22", fcels__opcode="0x04")
    assert flogi["fcels.cmn.security"] == "0" and flogi["fcels.npname"] == "21:00:00:1b:32:00:00:a1"
    (plogi,) = find(fc__r_ctl="0x22", fcels__opcode="0x03")
    assert plogi["fcels.cmn.security"] == "1"  # the port's security flag is on
    (prli,) = find(fc__r_ctl="0x22", fcels__opcode="0x20")
    assert int(prli["fcels.fcpflags"], 16) == 0x22 and int(prli["fcels.prliloflags"], 16) & 0x20
    accs = find(fc__r_ctl="0x23", fcels__opcode="0x02")
    assert any(a["fcels.fcpflags"] and int(a["fcels.fcpflags"], 16) == 0x12 for a in accs)  # PRLI ACC
    cmnds = find(fc__r_ctl="0x06")
    wr = next(c for c in cmnds if c["scsi_sbc.opcode"] == "0x2a")
    rd = next(c for c in cmnds if c["scsi_sbc.opcode"] == "0x28")
    assert (wr["fcp.dl"], wr["fcp.wrdata"], wr["fcp.rddata"], int(wr["scsi_sbc.rdwr10.lba"], 0)) == (
        "4096", "1", "0", 0x100)
    assert (rd["fcp.dl"], rd["fcp.rddata"], int(rd["fcp.lun"], 16)) == ("4608", "1", 0)
    (xrdy,) = find(fc__r_ctl="0x05")
    assert (xrdy["fcp.data_ro"], xrdy["fcp.burstlen"]) == ("0", "4096")
    data = find(fc__r_ctl="0x01")
    wr_ox, rd_ox = wr["fc.ox_id"], rd["fc.ox_id"]
    assert [d["fc.relative_offset"] for d in data if d["fc.ox_id"] == wr_ox] == ["0", "2048"]
    assert [d["fc.f_ctl"] for d in data if d["fc.ox_id"] == rd_ox] == ["0x800008", "0x880008"]
    rsps = {r["fc.ox_id"]: r for r in find(fc__r_ctl="0x07")}
    assert rsps[wr_ox]["fcp.status"] == "0x00" and rsps[wr_ox]["fc.f_ctl"] == "0x990000"
    assert (rsps[rd_ox]["fcp.resid"], rsps[rd_ox]["fcp.rsp.flags.resid_under"]) == ("512", "1")
    assert find(fc__r_ctl="0x22", fcels__opcode="0x05")  # LOGO at stop
