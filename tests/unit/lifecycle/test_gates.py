"""Promotion gates and the pluggable drift check (fakes only: no Redis, no MLflow)."""

from __future__ import annotations

import json

import pytest

from raylane.config import PromotionConfig
from raylane.errors import DependencyError
from raylane.lifecycle.gates import DriftStatus, RedisDriftCheck, drift_key, evaluate_gates
from raylane.lifecycle.shadow_stats import ShadowAggregate

CFG = PromotionConfig(
    min_samples=100,
    min_agreement=0.95,
    max_p95_abs_delta=0.1,
    max_latency_p99_ratio=1.5,
    require_no_drift_alert=True,
)


def _agg(**kw: object) -> ShadowAggregate:
    base = {
        "n": 500,
        "agreement_rate": 0.99,
        "p95_abs_delta": 0.05,
        "primary_latency_p99_ms": 10.0,
        "shadow_latency_p99_ms": 12.0,
        "shadow_version": "2",
    }
    base.update(kw)
    return ShadowAggregate("challenger", **base)  # type: ignore[arg-type]


def _by_name(gates: list) -> dict:
    return {g.name: g for g in gates}


def test_all_gates_pass_on_good_figures() -> None:
    gates = evaluate_gates("fraud", _agg(), CFG, lambda p: None)
    assert [g.name for g in gates] == [
        "min_samples",
        "min_agreement",
        "max_p95_abs_delta",
        "max_latency_p99_ratio",
        "require_no_drift_alert",
    ]
    assert all(g.passed for g in gates)


@pytest.mark.parametrize(
    ("figures", "gate", "measured"),
    [
        ({"n": 99}, "min_samples", 99),
        ({"agreement_rate": 0.94}, "min_agreement", 0.94),
        ({"p95_abs_delta": 0.2}, "max_p95_abs_delta", 0.2),
        ({"shadow_latency_p99_ms": 16.0}, "max_latency_p99_ratio", 1.6),
    ],
)
def test_a_failed_gate_names_threshold_and_measured(
    figures: dict, gate: str, measured: float
) -> None:
    gates = _by_name(evaluate_gates("fraud", _agg(**figures), CFG, lambda p: None))
    g = gates[gate]
    assert not g.passed and g.measured == pytest.approx(measured)
    assert [n for n, x in gates.items() if not x.passed] == [gate]
    text = g.describe()
    assert gate in text and "FAILED" in text and str(g.threshold) in text


def test_missing_figures_fail_their_gates() -> None:
    gates = evaluate_gates("fraud", ShadowAggregate("challenger"), CFG, lambda p: None)
    failed = {g.name for g in gates if not g.passed}
    assert failed == {"min_samples", "min_agreement", "max_p95_abs_delta", "max_latency_p99_ratio"}


class FakeRedis:
    def __init__(self, data: dict[str, str] | None = None, fail: bool = False) -> None:
        self.data = data or {}
        self.fail = fail
        self.asked: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.asked.append(key)
        if self.fail:
            raise ConnectionError("connection refused")
        v = self.data.get(key)
        return v.encode() if v is not None else None


def _state(open_: bool) -> str:
    return json.dumps(
        {
            "open": open_,
            "model_name": "fraud",
            "model_version": "1",
            "drift_share": 0.6,
            "threshold": 0.5,
            "drifted_columns": ["amount", "user_txn_count_60s"],
            "window_end": "2026-11-26T17:00:00Z",
            "updated_at": "2026-11-26T17:00:01Z",
        }
    )


def test_default_drift_check_reads_the_agreed_key() -> None:
    r = FakeRedis({drift_key("fraud"): _state(True)})
    check = RedisDriftCheck("redis://fake", client=r)
    st = check("fraud")
    assert r.asked == ["raylane:drift:fraud"]
    assert (
        st is not None and st.open and list(st.drifted_columns) == ["amount", "user_txn_count_60s"]
    )
    g = _by_name(evaluate_gates("fraud", _agg(), CFG, check))["require_no_drift_alert"]
    assert not g.passed and g.measured == "open alert" and "amount" in g.detail


def test_closed_or_missing_drift_state_passes() -> None:
    closed = RedisDriftCheck("redis://fake", client=FakeRedis({drift_key("fraud"): _state(False)}))
    missing = RedisDriftCheck("redis://fake", client=FakeRedis())
    for check in (closed, missing):
        assert _by_name(evaluate_gates("fraud", _agg(), CFG, check))[
            "require_no_drift_alert"
        ].passed
    assert missing("fraud") is None


def test_drift_gate_is_pluggable_and_can_be_off() -> None:
    seen: list[str] = []

    def fake(pipeline: str) -> DriftStatus:
        seen.append(pipeline)
        return DriftStatus(open=True)

    assert not _by_name(evaluate_gates("churn", _agg(), CFG, fake))["require_no_drift_alert"].passed
    assert seen == ["churn"]
    off = CFG.model_copy(update={"require_no_drift_alert": False})
    assert "require_no_drift_alert" not in _by_name(evaluate_gates("churn", _agg(), off, fake))


def test_unreadable_drift_state_is_a_dependency_error() -> None:
    with pytest.raises(DependencyError, match="raylane:drift:fraud"):
        RedisDriftCheck("redis://fake", client=FakeRedis(fail=True))("fraud")
    with pytest.raises(DependencyError, match="no valid drift state"):
        RedisDriftCheck("redis://fake", client=FakeRedis({drift_key("fraud"): "{not json"}))(
            "fraud"
        )
