"""Smoke tests of bench/edif.py and bench/edif_scale.py: every bench function at a tiny size, the shape of
what it returns and of the final JSON line, and the facts a figure depends on (the encrypted runs really
went through ESP, nothing was dropped, the rekey really switched SAs). No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import edif  # noqa: E402
import edif_scale  # noqa: E402

from edifd.proto import SaDirection  # noqa: E402


def _last_json(out: str) -> dict:
    lines = [x for x in out.splitlines() if x.strip()]
    return json.loads(lines[-1])


def _is_rate(x: object) -> bool:
    return isinstance(x, int | float) and x > 0


def test_negotiated_sas_match_across_the_pair():
    ini, res, ci, cr = edif.negotiate()
    # What one side sends with, the other receives with: same SPI, key and salt.
    assert (ci.spi_out, ci.key_out, ci.salt_out) == (cr.spi_in, cr.key_in, cr.salt_in)
    assert (ci.spi_in, ci.key_in, ci.salt_in) == (cr.spi_out, cr.key_out, cr.salt_out)
    assert ci.key_in != ci.key_out


def test_hba_target_loopback_shape():
    lb = edif.hba_target_loopback(seconds=0.1, qd=1, repeat=1, rounds=2)
    assert lb["errors"] == 0 and lb["rounds"] == 2
    assert _is_rate(lb["raw_tcp_mb_s"]) and _is_rate(lb["aesgcm_ceiling_mb_s"])
    for mode in ("plaintext", "encrypted"):
        for k in ("seq_write_1m", "seq_read_1m"):
            r = lb[mode][k]
            assert r["ops"] >= 2 and r["errors"] == 0 and _is_rate(r["mb_s"])
            assert len(r["mb_s_rounds"]) == 2 and r["mb_s"] == max(r["mb_s_rounds"])  # the best round
    esp = lb["encrypted"]["esp"]
    # The encrypted figures are ESP traffic: every FCP frame protected, none dropped, none in clear.
    assert esp["frames_out_protected"] >= 2 * 512 and esp["drops"] == 0
    assert esp["frames_in_protected"] == esp["frames_out_protected"]
    assert "esp" not in lb["plaintext"]
    for k in ("seq_write_1m", "seq_read_1m"):
        ratios = lb["ratios"][k]
        assert set(ratios) == {"encrypted_to_plaintext", "encrypted_to_ceiling", "plaintext_to_raw_tcp"}
        assert ratios["encrypted_to_plaintext"] == pytest.approx(
            lb["encrypted"][k]["mb_s"] / lb["plaintext"][k]["mb_s"], rel=1e-3)


def test_edif_main_quick_json(capsys):
    assert edif.main(["--quick", "--repeat", "1", "--seconds", "0.05", "--qd", "1"]) == 0
    out = capsys.readouterr().out
    summary = _last_json(out)
    assert summary["bench"] == "edif" and summary["quick"] is True
    assert list(summary["results"]) == ["AES_GCM_128"]
    figures = summary["results"]["AES_GCM_128"]
    assert {"encrypted_mb_s", "aesgcm_ceiling_mb_s", "ratio_with_codec"} <= set(figures)
    lb = summary["hba_target_loopback"]
    assert lb["errors"] == 0 and lb["qd"] == 1 and "ratios" in lb
    assert "HBA <-> target over TCP loopback" in out


def test_edif_main_without_loopback(capsys):
    assert edif.main(["--repeat", "1", "--cipher", "AES_GMAC_256", "--no-loopback"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["hba_target_loopback"] is None and list(summary["results"]) == ["AES_GMAC_256"]


@pytest.mark.parametrize(("targets", "rounds"), [(1, 3), (5, 1)])
def test_sessions_per_second_shape(targets, rounds):
    r = edif_scale.sessions_per_second(targets, rounds=rounds)
    assert r["targets"] == targets and r["sessions"] == targets * rounds
    assert _is_rate(r["sessions_per_s"])
    lat, svc = r["latency_ms"], r["service_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert 0 < svc["p50"] <= svc["p99"]


@pytest.mark.parametrize(("targets", "rounds"), [(1, 2), (3, 1)])
def test_engine_sessions_shape(targets, rounds):
    """The whole path: every port reaches PRLI after AUTH_OK with both SAs (checked inside), per port."""
    r = edif_scale.engine_sessions(targets, rounds=rounds, timeout=30.0)
    assert r["sessions"] == targets * rounds and _is_rate(r["sessions_per_s"])
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_sessions_over_budget_raise():
    with pytest.raises(edif_scale.BenchFailure):
        edif_scale._establish(300, deadline=0.0)  # noqa: SLF001 - the budget check itself


def test_rekey_stall_shape():
    r = edif_scale.rekey_stall(seconds=0.8, qd=2, margin=0.05, rekeys=2)
    assert r["io_errors"] == 0 and r["errors_seen"] == []
    # Both ends switched TX at each rekey, nothing dropped, only the newest pair is left on the initiator.
    assert r["esp"]["rekeys"] == 2 * 2 and r["esp"]["drops"] == 0
    sas = r["sas_after"]["initiator"]
    assert len(sas["rx"]) == 1 and len(sas["tx"]) == 1 and sas["pending_rx_delete"] is None
    assert len(r["rekey_steps_ms"]) == 2 and len(r["per_rekey"]) == 2 and len(r["window_ms"]) == 2
    order = ["start", "target_new_rx", "initiator_new_rx", "initiator_tx_switch",
             "initiator_deletes_requested", "initiator_old_rx_gone", "end"]
    for steps in r["rekey_steps_ms"]:
        assert [steps[k] for k in order] == sorted(steps[k] for k in order)
        assert steps["initiator_tx_switch"] <= steps["target_tx_switch"] <= steps["initiator_old_rx_gone"]
    for w in (r["with_rekey"], r["without_rekey"], *(p["with_rekey"] for p in r["per_rekey"])):
        assert w["ios"] >= 1 and w["errors"] == 0
        assert 0 < w["p50_latency_ms"] <= w["p99_latency_ms"] <= w["max_latency_ms"]
        assert w["longest_gap_ms"] > 0
    # The aggregate is the worst of the windows.
    assert r["with_rekey"]["max_latency_ms"] == max(p["with_rekey"]["max_latency_ms"] for p in r["per_rekey"])


def test_engine_rekey_stall_shape():
    r = edif_scale.engine_rekey_stall(seconds=0.6, qd=2, margin=0.05, timeout=30.0)
    assert r["io_errors"] == 0 and r["errors_seen"] == [] and r["esp_drops"] == 0 and r["esp_rekeys"] == 1
    steps = r["rekey_steps_ms"]
    assert steps["initiator_new_rx"] == 0 <= steps["initiator_tx_switch"] <= steps["initiator_old_rx_gone"]
    for w in (r["with_rekey"], r["without_rekey"]):
        assert w["ios"] >= 1 and w["errors"] == 0 and w["p50_latency_ms"] <= w["max_latency_ms"]


def test_edif_scale_main_json(capsys):
    assert edif_scale.main(["--targets", "1,3", "--rounds-single", "2", "--seconds", "0.4", "--rekeys", "1",
                            "--engine-targets", "2", "--engine-rounds-single", "1"]) == 0
    out = capsys.readouterr().out
    summary = _last_json(out)
    assert summary["bench"] == "edif_scale"
    assert [x["targets"] for x in summary["sessions"]["results"]] == [1, 3]
    assert [x["targets"] for x in summary["engine_sessions"]["results"]] == [2]
    assert summary["rekey_stall"]["io_errors"] == 0 and summary["engine_rekey_stall"]["io_errors"] == 0
    assert "sessions/s" in out and "Rekey under load" in out


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_a_member_and_monotonic(values, q):
    p = edif_scale.percentile(values, q)
    assert p in values
    assert edif_scale.percentile(values, 0) <= p <= edif_scale.percentile(values, 100) == max(values)


def test_install_pair_refusal_is_reported():
    _, _, ci, _ = edif.negotiate()
    sadb = edif.SaDatabase()
    edif.install_pair(sadb, ci)
    assert [sa.spi for sa in sadb.sas(SaDirection.RX)] == [ci.spi_in]
    _, _, other, _ = edif.negotiate()
    edif.install_pair(sadb, other, rekey=True)  # the second slot
    with pytest.raises(RuntimeError, match="refused"):
        edif.install_pair(sadb, edif.negotiate()[2])  # a third SA per direction: LIMIT


def test_hba_target_loopback_with_the_target_in_its_own_process():
    """The two-core rig: the target is a child process (bench/edif.py --target-child) holding the other end
    of the same SAs; its ESP counters come back when it stops, so the no-drop check covers both ends."""
    lb = edif.hba_target_loopback(seconds=0.1, qd=1, repeat=1, rounds=1, child_process=True)
    assert lb["errors"] == 0 and lb["target_process"] == "child" and lb["loop"] == "asyncio"
    for mode in ("plaintext", "encrypted"):
        for k in ("seq_write_1m", "seq_read_1m"):
            assert lb[mode][k]["ops"] >= 1 and _is_rate(lb[mode][k]["mb_s"])
    esp = lb["encrypted"]["esp"]
    assert esp["frames_out_protected"] >= 2 * 512 and esp["drops"] == 0
    assert esp["frames_in_protected"] == esp["frames_out_protected"]
    assert all(_is_rate(lb[m]["target_cpu_ms_per_mib"]) for m in ("plaintext", "encrypted"))  # from the child
