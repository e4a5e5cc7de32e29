"""Connection settings: what reaches replicas (no secrets), idempotence from the stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylane.settings import Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAYLANE_HOME", str(tmp_path))
    for var in ("RAYLANE_KAFKA_BOOTSTRAP", "REDIS_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_replica_env_leaves_out_urls_with_passwords(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis.prod:6379/0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ops:pa55@mlflow.prod")
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", "kafka.prod:9093")
    s = Settings.load()
    assert s.as_env()["REDIS_URL"] == "redis://:hunter2@redis.prod:6379/0"
    env = s.replica_env()
    assert "REDIS_URL" not in env and "MLFLOW_TRACKING_URI" not in env
    assert env["RAYLANE_KAFKA_BOOTSTRAP"] == "kafka.prod:9093"
    assert "hunter2" not in json.dumps(env) and "pa55" not in json.dumps(env)


def test_idempotence_recorded_by_the_stack_applies_to_its_broker_only(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "stack.json").write_text(
        json.dumps({"kafka_bootstrap": "127.0.0.1:9092", "kafka_idempotence": "false"})
    )
    s = Settings.load()
    assert s.kafka_idempotence is False
    assert s.as_env()["RAYLANE_KAFKA_IDEMPOTENCE"] == "false"
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", "kafka.prod:9093")
    s = Settings.load()
    assert s.kafka_idempotence is None and "RAYLANE_KAFKA_IDEMPOTENCE" not in s.as_env()
