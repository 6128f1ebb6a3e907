"""edif-agent CLI: --help, error paths and exit codes, ping and status against the stand-in client."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd.proto import Keepalive, Message, MessageType, Response, Status
from guest_agent import channel, cli
from guest_agent import disk as disk_mod
from guest_agent.ping import PingTally
from guest_agent.state import StateFile, decode_state, encode_state
from tests.support.agent import (
    WWPN_A,
    WWPN_B,
    FakeClient,
    control_lun_identity,
    make_disk,
    parking_preadv,
)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    p = tmp_path / "channel.key"
    p.write_text("ab" * 32 + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    p = tmp_path / "ctl.img"
    p.write_bytes(bytes(512 * 4096))
    return p


@pytest.fixture
def host(monkeypatch):
    """make_client returns the stand-in; preadv parks briefly like the host. Options per test."""
    made: list[FakeClient] = []
    opts: dict = {}

    def make_client(key, **kw):
        kw.pop("parked_reads")
        c = FakeClient(key, **kw, **opts)
        made.append(c)
        return c

    monkeypatch.setattr(channel, "make_client", make_client)
    monkeypatch.setattr(disk_mod.os, "preadv", parking_preadv(made))
    # The stand-in disk is a regular file: it gets a control LUN's identity (the check still runs).
    monkeypatch.setattr(channel, "describe_device", control_lun_identity(channel.describe_device))
    return made, opts


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_help_teaches():
    r = invoke("--help")
    assert r.exit_code == 0
    for word in ("EDIF", "CTRL", "0x83", "ping", "status", "run", "Exit codes",
                 "4  channel key file refused"):
        assert word in r.output
    r = invoke("ping", "--help")
    assert r.exit_code == 0
    for opt in ("--count", "--port", "--key", "--device", "--state", "p50/p99/max", "WWPN"):
        assert opt in r.output
    assert "--no-direct" not in r.output  # test-only switches stay hidden
    assert "--probe" in invoke("status", "--help").output


def test_ping_requires_a_key(dev):
    r = invoke("ping", "--device", str(dev), "--no-direct")
    assert r.exit_code == 2 and "--key FILE is required" in r.output


def test_ping_refuses_a_world_readable_key(key, dev):
    key.chmod(0o644)
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct")
    assert r.exit_code == cli.EXIT_KEY
    assert "accessible by other users" in r.output and "ab" * 4 not in r.output


def test_ping_without_a_control_disk(key, tmp_path):
    (tmp_path / "sys" / "block").mkdir(parents=True)
    r = invoke("ping", "--key", str(key), "--sys-root", str(tmp_path / "sys"))
    assert r.exit_code == cli.EXIT_NO_DISK
    assert "no EDIF control disk found: looked for vendor EDIF product CTRL on" in r.output


def test_ping_bad_port(key, tmp_path):
    make_disk(tmp_path / "sys", "sdb")
    r = invoke("ping", "--key", str(key), "--sys-root", str(tmp_path / "sys"), "--port", "xyz")
    # issue 10: an unparsable --port is a usage error (2), no longer "no disk" (3)
    assert r.exit_code == 2 and "bad WWPN 'xyz'" in r.output


@pytest.mark.parametrize("command", [["ping"], ["status"], ["status", "--probe"], ["run"],
                                     ["run", "--config", "agent.toml"]])
@pytest.mark.parametrize("port", ["zz", "", "0x0000000000000000", "50:01:43:80:12:34:56",
                                  "naa.50014380123456789"])
def test_every_command_refuses_a_bad_port_as_a_usage_error(key, tmp_path, command, port):
    make_disk(tmp_path / "sys", "sdb")
    r = invoke(*command, "--key", str(key), "--sys-root", str(tmp_path / "sys"), "--port", port)
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--port'" in r.output and f"bad WWPN {port!r}" in r.output
    for form in ("50:01:43:80:12:34:56:78", "5001438012345678", "0x5001438012345678", "naa.5001438012345678"):
        assert form in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("port", ["50:01:43:80:12:34:56:78", "0x5001438012345678", "naa.5001438012345678",
                                  "21:00:00:1b:32:00:00:a1"])
def test_good_port_forms_pass_the_usage_check(key, tmp_path, port):
    (tmp_path / "sys" / "block").mkdir(parents=True)
    r = invoke("ping", "--key", str(key), "--sys-root", str(tmp_path / "sys"), "--port", port)
    assert r.exit_code == cli.EXIT_NO_DISK, r.output  # parsed; then no disk for that port


def test_ping_counts_and_rtt(host, key, dev):
    made, _ = host
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--count", "25")
    assert r.exit_code == 0, r.output
    assert "25 sent, 25 received, 25 in order, 0 duplicates, 0 lost" in r.output
    assert "rtt ms: p50 " in r.output and "(n=25)" in r.output
    (c,) = made
    assert c.answered == 25 and c.counters["requests"] == 25


def test_ping_json(host, key, dev):
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "-c", "5", "--json")
    assert r.exit_code == 0
    rep = json.loads(r.output)
    assert (rep["sent"], rep["received"], rep["lost"], rep["duplicates"], rep["seq_gaps"]) == (5, 5, 0, 0, 0)
    assert rep["rtt_ms"]["n"] == 5 and rep["rtt_ms"]["p50"] <= rep["rtt_ms"]["p99"] <= rep["rtt_ms"]["max"]
    assert rep["established"] is True and rep["edge"]["writes_ok"] == 6


def test_ping_sees_duplicates_and_fails(host, key, dev):
    _, opts = host
    opts["duplicate_every"] = 3
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "-c", "9", "--json")
    assert r.exit_code == cli.EXIT_PING_PROBLEMS
    rep = json.loads(r.output)
    assert rep["duplicates"] == 3 and rep["received"] == 9 and rep["seq_repeats"] == 3


def test_ping_handshake_not_answered(host, key, dev):
    _, opts = host
    opts["accept"] = False
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--timeout", "0.3")
    assert r.exit_code == cli.EXIT_NOT_ESTABLISHED
    assert "no APP_START answer" in r.output and "wrong key?" in r.output


def test_ping_resumes_from_its_state_file(host, key, dev, tmp_path):
    made, _ = host
    state, report = tmp_path / "agent.state", tmp_path / "ping.json"
    common = ["--key", str(key), "--device", str(dev), "--no-direct", "--state", str(state),
              "--report", str(report), "--json"]
    r = invoke("ping", *common, "-c", "10")
    assert r.exit_code == 0
    assert os.stat(state).st_mode & 0o777 == 0o600
    client, app = decode_state(StateFile(state).load() or b"")
    assert json.loads(client)["up_seq"] == 10 and app["ping"]["sent"] == 10
    r = invoke("ping", *common, "-c", "30")  # a restarted agent continues the same count
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    counts = (rep["sent"], rep["received"], rep["in_order"], rep["duplicates"], rep["lost"])
    assert counts == (30, 30, 30, 0, 0)
    assert rep["seq_gaps"] == 0 and rep["seq_repeats"] == 0
    assert len(made) == 2 and made[1].started is False  # restored established state: no new handshake
    assert json.loads(report.read_text())["sent"] == 30


def test_a_resumed_ping_sees_the_answer_its_first_read_brings(host, key, dev, tmp_path, monkeypatch):
    """The lab's seq_gaps=1 after an agent SIGKILL, without timing luck: the killed run had sent a ping
    the host answered, and the restarted agent's very first READ brings that (redelivered) answer,
    before the endpoint's start() has even returned. The ping's handler must already be listening:
    otherwise the client consumes the answer (and saves it as consumed), the tally never sees it, the
    ping is sent again, and its second answer shows up as a skipped upstream sequence number."""
    made, _ = host
    state = tmp_path / "agent.state"
    common = ["--key", str(key), "--device", str(dev), "--no-direct", "--state", str(state), "--json"]
    assert invoke("ping", *common, "-c", "10").exit_code == 0
    # What the killed run left: an 11th ping sent and saved, its answer not yet seen.
    raw_client, app = decode_state(StateFile(state).load() or b"")
    saved = json.loads(raw_client)
    tally = PingTally.from_dict(app["ping"])
    pending_rid = saved["next_rid"]
    tally.on_sent(pending_rid, 0.0)
    saved["next_rid"] += 1
    StateFile(state).save(encode_state(json.dumps(saved).encode(), {"ping": tally.to_dict()}))

    real_make = channel.make_client

    def make_with_redelivery(key, **kw):  # the host answered the 11th ping; it waits for a READ
        c = real_make(key, **kw)
        c.up_seq += 1
        c.upstream.append(Message(Response(MessageType.KEEPALIVE, Status.OK), 0, c.epoch, pending_rid,
                                  c.up_seq))
        return c

    real_start = disk_mod.ControlDiskEndpoint.start

    def start_then_first_read(self):  # the first READ completes before start() returns
        real_start(self)
        deadline = time.monotonic() + 10
        while made[-1].counters["delivered"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(channel, "make_client", make_with_redelivery)
    monkeypatch.setattr(disk_mod.ControlDiskEndpoint, "start", start_then_first_read)
    r = invoke("ping", *common, "-c", "12", "--resume-grace", "5")
    assert r.exit_code == 0, r.output
    assert made[-1].counters["delivered"] >= 1  # the answer did come with the first READ
    rep = json.loads(r.output)
    assert (rep["sent"], rep["received"], rep["resent"], rep["duplicates"], rep["lost"]) == (12, 12, 0, 0, 0)
    assert rep["seq_gaps"] == 0 and rep["seq_repeats"] == 0


def test_ping_with_a_corrupt_state_file(host, key, dev, tmp_path):
    bad = tmp_path / "agent.state"
    bad.write_text("{")
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--state", str(bad))
    assert r.exit_code == cli.EXIT_IO and "not an edif-agent state file" in r.output
    bad.write_bytes(encode_state(FakeClient().snapshot(), {"ping": {"sent": "x"}}))
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--state", str(bad))
    assert r.exit_code == cli.EXIT_IO and "cannot resume" in r.output


def test_ping_missing_device(host, key, tmp_path):
    r = invoke("ping", "--key", str(key), "--device", str(tmp_path / "gone.img"), "--no-direct")
    assert r.exit_code == cli.EXIT_NO_DISK and "not a whole block device" in r.output


def test_status_lists_disks_and_ports(tmp_path):
    sys_root = tmp_path / "sys"
    make_disk(sys_root, "sdb", serial="CTL-A", wwpn=WWPN_A)
    make_disk(sys_root, "sdc", serial="CTL-B", wwpn=WWPN_B)
    make_disk(sys_root, "sda", vendor="QEMU", model="QEMU HARDDISK")
    r = invoke("status", "--sys-root", str(sys_root))
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert len(lines) == 2
    assert "/dev/sdb" in lines[0] and "50:01:43:80:12:34:56:7a" in lines[0] and "CTL-A" in lines[0]
    assert "/dev/sdc" in lines[1] and "50:01:43:80:12:34:56:7b" in lines[1]
    out = json.loads(invoke("status", "--sys-root", str(sys_root), "--json").output)
    assert [d["port"] for d in out["disks"]] == ["50:01:43:80:12:34:56:7a", "50:01:43:80:12:34:56:7b"]


def test_status_without_disks_exits_3(tmp_path):
    (tmp_path / "block").mkdir()
    r = invoke("status", "--sys-root", str(tmp_path))
    assert r.exit_code == cli.EXIT_NO_DISK and "no EDIF control disk" in r.output


def test_status_probe_shows_counters_but_no_key(host, key, dev):
    r = invoke("status", "--device", str(dev), "--no-direct", "--probe", "--key", str(key))
    assert r.exit_code == 0, r.output
    assert "established=True" in r.output and "writes_ok" in r.output and "requests" in r.output
    assert "ab" * 8 not in r.output
    r = invoke("status", "--device", str(dev), "--probe")
    assert r.exit_code == 2 and "--probe needs --key" in r.output


def test_run_requires_a_key():
    r = invoke("run")
    assert r.exit_code == 2 and "--key FILE is required" in r.output


def test_sd_notify_sends_a_datagram(tmp_path, monkeypatch):
    import socket

    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        cli.sd_notify("READY=1")
        assert srv.recv(100) == b"READY=1"
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
        cli.sd_notify("READY=1")  # best effort: no error
    finally:
        srv.close()


# -- the stand-in itself ---------------------------------------------------------------------------


def test_stand_in_answers_keepalive_after_handshake() -> None:
    c = FakeClient()
    c.start()
    w = c.next_write()
    assert w is not None and w.payload == b"APP_START"
    c.write_done(w.token, True)
    assert c.established
    rid = c.request(Keepalive())
    w = c.next_write()
    assert w is not None
    c.write_done(w.token, True)
    r = c.next_read()
    (msg,) = c.read_done(r.token, bytes(4096))
    assert msg.request_id == rid and msg.sequence == 1 and msg.type is MessageType.RESPONSE


def test_stand_in_restores_from_snapshot() -> None:
    c = FakeClient()
    c.start()
    w = c.next_write()
    assert w is not None
    c.write_done(w.token, True)
    c.request(Keepalive())
    c2 = FakeClient(state=c.snapshot())
    assert c2.established and c2.next_rid == 2


# -- --device: the identity check (issue 10, safety 2) ---------------------------------------------


def test_ping_refuses_a_regular_file_and_writes_nothing(key, tmp_path):
    """The real check, no seam: a regular file is not a control LUN; exit 3, the file byte for byte."""
    f = tmp_path / "not-a-disk.img"
    before = os.urandom(16 << 20)  # big enough for the channel's geometry: main wrote its HELLO into it
    f.write_bytes(before)
    r = invoke("ping", "--key", str(key), "--device", str(f), "--no-direct", "--timeout", "0.5")
    assert r.exit_code == cli.EXIT_NO_DISK, r.output
    assert f"{f} is not an EDIF control LUN: it is a regular file" in r.output
    assert "edif-agent status" in r.output
    assert f.read_bytes() == before


@pytest.fixture
def no_open(monkeypatch):
    """Records every attempt to open a control disk (a refused --device must never get that far)."""
    opened: list[str] = []

    def spy(self):
        opened.append(self.path)
        raise AssertionError(f"opened {self.path}")

    monkeypatch.setattr(disk_mod.ControlDiskEndpoint, "open", spy)
    return opened


@pytest.mark.parametrize(("vendor", "model", "found"), [
    ("QEMU", "QEMU HARDDISK", "INQUIRY says vendor 'QEMU' product 'QEMU HARDDISK', not vendor 'EDIF' "
                              "product 'CTRL'"),
    ("EDIF", "LAB DATA", "INQUIRY says vendor 'EDIF' product 'LAB DATA'"),  # edifd's file LUN: not control
])
@pytest.mark.parametrize("command", [("ping",), ("run",), ("status", "--probe")])
def test_device_of_another_kind_is_refused_before_it_is_opened(key, tmp_path, no_open, vendor, model, found,
                                                               command):
    sys_root = tmp_path / "sys"
    make_disk(sys_root, "sdq", vendor=vendor, model=model)
    r = invoke(*command, "--key", str(key), "--device", "/dev/sdq", "--sys-root", str(sys_root))
    assert r.exit_code == cli.EXIT_NO_DISK, r.output
    assert f"/dev/sdq is not an EDIF control LUN: {found}" in r.output
    assert "pick one from `edif-agent status`" in r.output
    assert no_open == []


def test_status_device_shows_the_same_refusal(tmp_path):
    sys_root = tmp_path / "sys"
    make_disk(sys_root, "sda", vendor="QEMU", model="QEMU HARDDISK")
    (sys_root / "block" / "vda").mkdir()  # virtio-blk: no INQUIRY data in sysfs
    r = invoke("status", "--device", "/dev/sda", "--sys-root", str(sys_root))
    assert r.exit_code == cli.EXIT_NO_DISK and "INQUIRY says vendor 'QEMU'" in r.output
    r = invoke("status", "--device", "/dev/vda", "--sys-root", str(sys_root))
    assert r.exit_code == cli.EXIT_NO_DISK
    assert "/dev/vda is not an EDIF control LUN: sysfs has no INQUIRY vendor or product" in r.output


def test_device_must_carry_the_port_asked_for(key, tmp_path, no_open):
    sys_root = tmp_path / "sys"
    make_disk(sys_root, "sdq", wwpn=WWPN_A)
    make_disk(sys_root, "sdr", wwpn=None)
    common = ["--key", str(key), "--sys-root", str(sys_root), "--port", "50:01:43:80:12:34:56:7b"]
    r = invoke("ping", *common, "--device", "/dev/sdq")
    assert r.exit_code == cli.EXIT_NO_DISK
    assert "/dev/sdq reports port 50:01:43:80:12:34:56:7a, not 50:01:43:80:12:34:56:7b" in r.output
    r = invoke("ping", *common, "--device", "/dev/sdr")
    assert r.exit_code == cli.EXIT_NO_DISK and "/dev/sdr reports no port (no FC target-port" in r.output
    assert no_open == []


def test_an_edif_control_lun_is_accepted(tmp_path):
    """(c) without a seam: the fake sysfs says EDIF/CTRL (and the port), so find_disk takes the disk."""
    sys_root = tmp_path / "sys"
    make_disk(sys_root, "sdq", wwpn=WWPN_A)
    make_disk(sys_root, "sdr", vendor="LAB", model="CHAN", wwpn=None)
    o = channel.ChannelOptions(device="/dev/sdq", sys_root=str(sys_root), port="50:01:43:80:12:34:56:7a")
    d = channel.find_disk(o)
    assert (d.devnode, d.vendor, d.model, d.wwpn, d.source) == ("/dev/sdq", "EDIF", "CTRL", WWPN_A, "device")
    # --vendor/--product say what to look for, for discovery and --device alike
    o = channel.ChannelOptions(device="/dev/sdr", sys_root=str(sys_root), vendor="LAB", product="CHAN")
    assert channel.find_disk(o).model == "CHAN"


def test_the_stand_in_is_accepted_through_the_identity_seam(host, key, dev):
    """(c) through the seam: the stand-in file describes as EDIF/CTRL and the real check passes it."""
    r = invoke("status", "--device", str(dev), "--json")
    assert r.exit_code == 0, r.output
    (d,) = json.loads(r.output)["disks"]
    assert (d["vendor"], d["model"], d["source"], d["port"]) == ("EDIF", "CTRL", "stand-in",
                                                                 "50:01:43:80:12:34:56:78")
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "-c", "2")
    assert r.exit_code == 0, r.output


def test_a_control_lun_too_small_for_the_channel_is_refused_without_a_traceback(key, tmp_path, monkeypatch):
    """An EDIF control LUN configured smaller than the channel layout needs: exit 3, a sentence, no
    GeometryError traceback (the real client, the stand-in identity)."""
    f = tmp_path / "tiny.img"
    f.write_bytes(bytes(1 << 20))
    monkeypatch.setattr(channel, "describe_device", control_lun_identity(channel.describe_device))
    r = invoke("ping", "--key", str(key), "--device", str(f), "--no-direct", "--timeout", "0.5")
    assert r.exit_code == cli.EXIT_NO_DISK, r.output
    assert f"{f} cannot carry the channel:" in r.output and "Traceback" not in r.output
    assert f.read_bytes() == bytes(1 << 20)


def test_the_handshake_wait_says_what_it_waits_for(host, key, dev, monkeypatch):
    from guest_agent import runtime

    _, opts = host
    opts["accept"] = False
    monkeypatch.setattr(runtime, "HANDSHAKE_SAY_EVERY", 0.01)
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--timeout", "0.5")
    assert r.exit_code == cli.EXIT_NOT_ESTABLISHED
    assert f"INFO edif-agent: waiting for the APP_START answer from edifd on {dev} (port " in r.output
    assert " of 0.5 s)" in r.output


def test_log_level_hides_the_info_lines(host, key, dev, monkeypatch):
    from guest_agent import runtime

    _, opts = host
    opts["accept"] = False
    monkeypatch.setattr(runtime, "HANDSHAKE_SAY_EVERY", 0.01)
    r = invoke("ping", "--key", str(key), "--device", str(dev), "--no-direct", "--timeout", "0.3",
               "--log-level", "warning")
    assert r.exit_code == cli.EXIT_NOT_ESTABLISHED and "waiting for" not in r.output


def test_run_config_lists_every_problem_on_its_own_line(tmp_path, key, dev):
    conf = tmp_path / "agent.toml"
    conf.write_text('keepalive_interval = "5"\nrekey = 1\n')
    r = invoke("run", "--config", str(conf), "--key", str(key), "--device", str(dev), "--no-direct")
    assert r.exit_code == cli.EXIT_CONFIG
    assert "edif-agent: configuration refused (2 problems):" in r.output
    assert f"  - {conf}:keepalive_interval: expected an integer or a float, got a string" in r.output
    assert f"  - {conf}:rekey: expected a table, got an integer" in r.output
    assert "; " not in r.output


def test_errors_carry_their_syslog_priority_under_systemd(tmp_path, monkeypatch):
    monkeypatch.setattr("edifd.edges.command_line.under_journal", lambda stream: True)
    conf = tmp_path / "agent.toml"
    conf.write_text("rekey = 1\n")
    r = invoke("check-config", "--config", str(conf))
    assert r.exit_code == cli.EXIT_CONFIG
    assert r.output.splitlines()[:2] == ["<3>edif-agent: configuration refused (1 problem):",
                                         f"<3>  - {conf}:rekey: expected a table, got an integer"]
