"""The agent's [metrics] table in its configuration (edifd.secapp.config): off without it, checked with
the rest of the file, and not a key of edif-target's responder credentials file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edifd import metrics
from edifd.metrics import MetricsConfig
from edifd.secapp.config import SecConfigError, load_config, parse_config

W1 = "21:00:00:1b:32:a0:b0:c2"


def psk(tmp_path: Path) -> dict:
    p = tmp_path / "a.psk"
    p.write_text("a pre-shared key of some length\n")
    os.chmod(p, 0o600)
    return {W1: {"psk_file": "a.psk"}}


def test_without_a_metrics_table_the_endpoint_is_off(tmp_path):
    assert parse_config({"targets": psk(tmp_path)}, base_dir=tmp_path).metrics is None


def test_the_table_gives_the_endpoint(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(f'[targets."{W1}"]\npsk_file = "a.psk"\n\n[metrics]\nlisten = "[::1]:9465"\n')
    psk(tmp_path)
    cfg = load_config(path)
    assert cfg.metrics == MetricsConfig("::1", 9465, False)
    assert "metrics=[::1]:9465" in repr(cfg)


def test_metrics_problems_come_with_the_others(tmp_path):
    data = {"targets": psk(tmp_path), "keepalive_misses": 0,
            "metrics": {"listen": "0.0.0.0:9464", "colour": "red"}}
    with pytest.raises(SecConfigError) as e:
        parse_config(data, base_dir=tmp_path)
    got = e.value.problems
    assert "keepalive_misses: between 1 and 100" in got
    assert "metrics.colour: unknown key" in got
    assert any(p.startswith("metrics.listen: 0.0.0.0 is not a loopback address") for p in got)


def test_asking_for_metrics_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "client_available", lambda: False)
    with pytest.raises(SecConfigError, match="python3-prometheus-client"):
        parse_config({"targets": psk(tmp_path), "metrics": {"listen": "127.0.0.1:9464"}}, base_dir=tmp_path)
    assert parse_config({"targets": psk(tmp_path)}, base_dir=tmp_path).metrics is None  # not needed off


def test_a_responder_credentials_file_has_no_metrics_table(tmp_path):
    data = {"initiators": psk(tmp_path), "metrics": {"listen": "127.0.0.1:9464"}}
    with pytest.raises(SecConfigError) as e:
        parse_config(data, base_dir=tmp_path, peers_key="initiators")
    assert e.value.problems == ["metrics: unknown key"]
