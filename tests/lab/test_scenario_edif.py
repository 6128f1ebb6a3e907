"""The EDIF lab scenario (lab.scenario_edif): fast tests of its trace reading and verdicts on synthetic data,
and (``-m lab``) one real run — VM-S's edif-agent secures edifd's HBA ports in VM-H against edif-target on
this host — feeding one test per claim."""

from __future__ import annotations

import copy
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.fc.pcap import PcapError, read_records
from lab.guest.host_tenant import MIB, chunk
from lab.scenario_edif import (
    SAMPLE_LEN,
    T_WWPNS,
    check_trace,
    pattern_samples,
    problems,
    run_edif_lab,
    verdicts,
)

SOF, EOF = b"\x2d\x00\xb5\x00"[::-1], b"\x42\x00\xb5\x00"[::-1]  # any 4 bytes: the parser skips them


def frame(r_ctl: int, fc_type: int, df_ctl: int, payload: bytes) -> bytes:
    hdr = struct.pack(">B3sB3sB3sBBHHHI", r_ctl, b"\x01\x02\x03", 0, b"\x04\x05\x06", fc_type,
                      b"\x00\x00\x00", 0, df_ctl, 0, 0x1234, 0xFFFF, 0)
    return SOF + hdr + payload + b"\0\0\0\0" + EOF


def pcap(frames: list[bytes], linktype: int = 225) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", i, 0, len(f), len(f)) + f
    return out


def esp(payload: bytes, spi: int = 0x1000) -> bytes:
    return struct.pack(">II", spi, 1) + payload + bytes(16)  # SPI, sequence, ciphertext, ICV


CLEAN = [
    frame(0x22, 0x01, 0x00, bytes([0x90]) + bytes(27)),  # AUTH_ELS, clear
    frame(0x06, 0x08, 0x40, esp(bytes(48))),  # FCP_CMND over ESP
    frame(0x01, 0x08, 0x40, esp(bytes(512))),  # FCP_DATA over ESP
    frame(0x07, 0x08, 0x40, esp(bytes(24))),  # FCP_RSP over ESP
    frame(0x84, 0x00, 0x00, bytes(12)),  # BLS BA_ACC, clear
    frame(0x22, 0x01, 0x00, bytes([0x05]) + bytes(15)),  # LOGO
]


def test_read_records_reads_records_and_drops_a_cut_one():
    data = pcap(CLEAN)
    assert read_records(data) == CLEAN
    assert read_records(data[:-3]) == CLEAN[:-1]  # the writer was still running


@pytest.mark.parametrize("bad, words", [
    (b"", "not a pcap"),
    (struct.pack("<IHHiIII", 0xD4C3B2A1, 2, 4, 0, 0, 65535, 225), "magic"),
    (pcap([], linktype=1), "linktype 1"),
])
def test_read_records_refuses_other_files(bad, words):
    with pytest.raises(PcapError, match=words):
        read_records(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_read_records_raises_only_its_own_error(data):
    try:
        read_records(data)
    except PcapError:
        pass


def test_check_trace_counts_esp_on_fcp_only():
    r = check_trace(CLEAN, pattern_samples(4))
    assert (r["fcp"], r["fcp_esp"], r["fcp_cmnd"]) == (3, 3, 1)
    assert (r["other"], r["other_esp"], r["auth_els"], r["logo"]) == (3, 0, 1, 1)
    assert r["pattern_hits"] == 0 and r["short"] == 0


def test_check_trace_sees_clear_fcp_marked_els_and_the_pattern():
    sample = pattern_samples(4)[2]
    bad = [
        frame(0x01, 0x08, 0x00, bytes(8) + sample + bytes(8)),  # FCP_DATA in clear with the pattern
        frame(0x01, 0x08, 0x40, esp(bytes(16), spi=0)),  # "ESP" with the reserved SPI 0
        frame(0x22, 0x01, 0x40, bytes([0x90]) + bytes(27)),  # an ELS marked ESP
    ]
    r = check_trace(CLEAN + bad, pattern_samples(4))
    assert (r["fcp"], r["fcp_esp"], r["other_esp"], r["pattern_hits"]) == (5, 3, 1, 1)


def test_pattern_samples_come_from_the_written_pattern():
    samples = pattern_samples(64)
    assert len(samples) == 16 and all(len(s) == SAMPLE_LEN for s in samples)
    assert all(any(s in chunk(i) for i in range(64)) for s in samples)
    assert not any(s in bytes(MIB) for s in samples)


def _w(wwpn: int) -> str:
    return ":".join(f"{wwpn:016x}"[i:i + 2] for i in range(0, 16, 2))


def _engine(auth: str, session: str, **counters: int) -> dict:
    return {"auth": auth, "session": session, "esp": {"rekeys": counters.pop("rekeys", 0)},
            "counters": {"auth_ok": 0, "auth_fail": 0, "sa_updates": 0, "app_stops": 0, **counters}}


def good_summary() -> dict:
    """What a passing run's summary looks like (the shape run_edif_lab writes)."""
    secured = {"engines": {"ctl0": _engine("AUTHENTICATED", "ready", auth_ok=1, sa_updates=2, rekeys=0)}}
    after_io = {"engines": {"ctl0": _engine("AUTHENTICATED", "ready", auth_ok=4, rekeys=3),
                            "ctl1": _engine("NOT_SECURE", "auth_pending", auth_fail=1)}}
    after_stop = {"engines": {"ctl0": _engine("NOT_SECURE", "gone", auth_ok=4, app_stops=1, rekeys=3)}}
    return {
        "mib": 64, "agents_started_s": 40.0, "secured_s": 60.0, "samples": 16, "rekeys_during_io": 3,
        "agent_rekeys": 3, "backing_mismatched_mib": [],
        "agent_p0_secured": {"app": {"targets": {_w(T_WWPNS[0]): {"state": "secure"}}}},
        "agent_p0_final": {"channel": {"cursor": 210, "host_sequence": 210,
                                       "channel": {"messages_in": 210, "handshakes": 1, "duplicates": 3}}},
        "iscsi_access": {k: {"refused": True} for k in ("unknown_initiator", "wrong_secret", "no_chap")},
        "capture": {"messages_down": 230, "messages_up": 280, "sa_updates": 22, "sa_updates_sealed": 22,
                    "esp_frames_tried": 12, "guesses": 90000, "keys_found": 0, "frames_decrypted": 0},
        "rogue": {"reads": 40, "errors": 0, "messages": 30, "sealed": 6, "opened_without_epoch_keys": 0},
        "agent_p1_secured": {"app": {"targets": {_w(T_WWPNS[1]): {"state": "failed"}}}},
        "target_b": {"commands": 0, "auth_failed": 1},
        "trace_a": {"fcp": 9000, "fcp_esp": 9000, "other": 40, "other_esp": 0, "auth_els": 8, "logo": 1,
                    "short": 0, "pattern_hits": 0, "fcp_cmnd": 130},
        "trace_b": {"fcp": 0, "fcp_esp": 0, "fcp_cmnd": 0, "auth_els": 2, "pattern_hits": 0},
        "vm_s": {"agent_rcs": [0, 0]},
        "vm_h": {"status_secured": secured, "status_after_io": after_io, "status_after_stop": after_stop,
                 "io": {"mib": 64, "write_errors": [], "read_errors": [], "mismatched_mib": [],
                        "write_MBps": 3.0, "read_MBps": 4.0},
                 "after_stop": {"ok": False, "errno": "EIO", "strerror": "Input/output error", "s": 0.05},
                 "metrics": {"samples": 3, "lines": [
                     'edifd_esp_frames_total{lun="ctl0",direction="tx"} 9000.0',
                     'edifd_channel_messages_total{lun="ctl0"} 210.0',
                     'edifd_esp_rekeys_total{lun="ctl0"} 3.0']},
                 "edifctl_sas": {"rc": 0, "json": [{"port": "p0",
                                                    "sas": [{"direction": "tx", "spi": 257}]}]}},
    }


def test_verdicts_pass_a_good_run():
    v = verdicts(good_summary())
    assert len(v) == 15 and all(ok for _, ok, _ in v), [x for x in v if not x[1]]
    assert problems(good_summary()) == []


def _spoil(path: str, value) -> dict:
    s = copy.deepcopy(good_summary())
    *keys, last = path.split(".")
    d = s
    for k in keys:
        d = d[k]
    d[last] = value
    return s


@pytest.mark.parametrize("path, value, claim", [
    ("agents_started_s", None, "service started"),
    ("agent_p0_secured.app.targets", {}, "target A secured"),
    ("target_b.commands", 1, "at B"),
    ("trace_b.fcp_cmnd", 2, "at B"),
    ("vm_h.status_after_io.engines.ctl1.counters.sa_updates", 1, "at B"),
    ("vm_h.io.read_errors", [[3, "Input/output error"]], "tenant 64 MiB|rekey during I/O"),
    ("rekeys_during_io", 0, "rekey during I/O"),
    ("backing_mismatched_mib", [7], "backing file"),
    ("trace_a.fcp_esp", 8999, "DF_CTL 0x40"),
    ("trace_a.other_esp", 1, "DF_CTL 0x40"),
    ("trace_a.pattern_hits", 1, "never in clear"),
    ("vm_s.agent_rcs", [1, 0], "logged out"),
    ("vm_h.status_after_stop.engines.ctl0.counters.app_stops", 0, "logged out"),
    ("vm_h.after_stop", {"ok": True, "s": 0.01}, "fails cleanly"),
    ("vm_h.after_stop", {"ok": None, "hung": True, "s": 60}, "fails cleanly"),
    ("capture.keys_found", 1, "no SA key"),
    ("capture.frames_decrypted", 3, "no SA key"),
    ("capture.sa_updates_sealed", 21, "no SA key"),
    ("capture.sa_updates", 0, "no SA key"),
    ("rogue.opened_without_epoch_keys", 1, "keyless reader"),
    ("rogue.reads", 0, "keyless reader"),
    ("agent_p0_final.channel.cursor", 211, "keyless reader"),
    ("agent_p0_final.channel.channel", {}, "keyless reader"),
    ("vm_h.metrics", {"error": "URLError: refused"}, "metrics scraped"),
    ("vm_h.edifctl_sas.rc", 3, "edifctl sas"),
    ("iscsi_access.wrong_secret", {"refused": False}, "ACL + CHAP"),
    ("iscsi_access.unknown_initiator", {"refused": None}, "ACL + CHAP"),
])
def test_each_claim_fails_on_its_own_evidence(path, value, claim):
    claims = claim.split("|")  # an I/O error also spoils "rekey during I/O with 0 errors"
    v = verdicts(_spoil(path, value))
    failed = [name for name, ok, _ in v if not ok]
    assert len(failed) >= 1 and all(any(c in name for c in claims) for name in failed), failed
    assert any(claims[0] in p for p in problems(_spoil(path, value)))


def test_an_empty_summary_fails_every_claim():
    assert not any(ok for _, ok, _ in verdicts({}))


# -- the real run (QEMU, root) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edif(lab_image, tmp_path_factory):
    return run_edif_lab(lab_image, tmp_path_factory.mktemp("edif-lab"), mib=64)


def _claim(summary: dict, words: str) -> None:
    (match,) = [(ok, detail) for name, ok, detail in verdicts(summary) if words in name]
    assert match[0], f"{words}: {match[1]}; problems: {summary.get('problems')}"


@pytest.mark.lab
def test_lab_agent_service_starts(edif):
    _claim(edif, "service started")


@pytest.mark.lab
def test_lab_target_a_secured(edif):
    _claim(edif, "target A secured")


@pytest.mark.lab
def test_lab_wrong_psk_target_b_fails_and_stays_unusable(edif):
    _claim(edif, "at B")


@pytest.mark.lab
def test_lab_tenant_64_mib_through_esp(edif):
    _claim(edif, "tenant 64 MiB")


@pytest.mark.lab
def test_lab_rekey_during_io_without_errors(edif):
    _claim(edif, "rekey during I/O")


@pytest.mark.lab
def test_lab_backing_file_matches(edif):
    _claim(edif, "backing file")


@pytest.mark.lab
def test_lab_trace_esp_on_every_fcp_frame(edif):
    _claim(edif, "DF_CTL 0x40")


@pytest.mark.lab
def test_lab_pattern_never_in_clear(edif):
    _claim(edif, "never in clear")


@pytest.mark.lab
def test_lab_agent_stop_logs_out(edif):
    _claim(edif, "logged out")


@pytest.mark.lab
def test_lab_io_after_stop_fails_cleanly(edif):
    _claim(edif, "fails cleanly")


@pytest.mark.lab
def test_lab_no_sa_key_crosses_the_iscsi_transport(edif):
    _claim(edif, "no SA key")


@pytest.mark.lab
def test_lab_a_keyless_reader_gets_ciphertext_and_loses_nothing(edif):
    _claim(edif, "keyless reader")


@pytest.mark.lab
def test_lab_control_lun_export_is_acl_and_chap(edif):
    _claim(edif, "ACL + CHAP")


@pytest.mark.lab
def test_lab_edifd_metrics_scraped_in_vm_h(edif):
    _claim(edif, "metrics scraped")


@pytest.mark.lab
def test_lab_edifctl_sas_json_in_vm_h(edif):
    _claim(edif, "edifctl sas")


@pytest.mark.lab
def test_lab_no_other_problem(edif):
    assert edif["problems"] == []
