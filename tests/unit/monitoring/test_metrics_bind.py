"""Metrics servers listen on RAYLANE_METRICS_HOST: loopback unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from raylane.monitoring import metrics


def _listening_ip(port: int) -> str:
    for c in psutil.Process().net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
            return str(c.laddr.ip)
    raise AssertionError(f"nothing of this process listens on port {port}")


def test_metrics_server_binds_loopback_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYLANE_METRICS_HOST", raising=False)
    name = f"bind-test-{tmp_path.name}"
    port = metrics.serve_metrics(tmp_path, name)
    try:
        assert _listening_ip(port) == "127.0.0.1"
        [target] = json.loads(
            next((tmp_path / "prometheus" / "targets").glob("*.json")).read_text()
        )
        assert target["targets"] == [f"127.0.0.1:{port}"]
    finally:
        metrics.withdraw_metrics(tmp_path, name)


def test_metrics_host_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLANE_METRICS_HOST", "")
    assert metrics.metrics_host() == "127.0.0.1"
    monkeypatch.setenv("RAYLANE_METRICS_HOST", "10.1.2.3")
    assert metrics.metrics_host() == "10.1.2.3"
    monkeypatch.setenv("RAYLANE_METRICS_HOST", "auto")
    monkeypatch.setattr(metrics, "_node_ip", lambda: "10.9.9.9")
    assert metrics.metrics_host() == "10.9.9.9"
