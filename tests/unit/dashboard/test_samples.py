"""The dashboard's metric snapshots: keys, sums, quantiles, rates over a history."""

from __future__ import annotations

import math

import httpx
import pytest

from raylane.dashboard.samples import (
    MetricsHistory,
    PrometheusSource,
    parse_key,
    quantile,
    samples_of_vector,
    total,
    totals_by,
)
from raylane.errors import DependencyError
from raylane.monitoring.live import histogram_quantile

SNAP = {
    "raylane_events_scored_total{decision=approved}": 90.0,
    "raylane_events_scored_total{decision=flagged}": 10.0,
    "raylane_events_dlq_total{error_class=MissingField}": 3.0,
    "raylane_events_dlq_total{error_class=WrongType}": 2.0,
    "raylane_stage_latency_ms_bucket{le=1.0,stage=score_ms}": 10.0,
    "raylane_stage_latency_ms_bucket{le=5.0,stage=score_ms}": 90.0,
    "raylane_stage_latency_ms_bucket{le=+Inf,stage=score_ms}": 100.0,
    "raylane_stage_latency_ms_bucket{le=1.0,stage=batch_ms}": 0.0,
    "raylane_stage_latency_ms_bucket{le=5.0,stage=batch_ms}": 50.0,
    "raylane_stage_latency_ms_bucket{le=+Inf,stage=batch_ms}": 100.0,
}


def test_parse_key() -> None:
    assert parse_key("a_total{x=1,y=two}") == ("a_total", {"x": "1", "y": "two"})
    assert parse_key("a_total{}") == ("a_total", {})


def test_sums_by_label_and_filter() -> None:
    assert totals_by(SNAP, "raylane_events_scored_total", "decision") == {
        "approved": 90.0,
        "flagged": 10.0,
    }
    assert total(SNAP, "raylane_events_dlq_total") == 5.0
    assert total(SNAP, "raylane_events_dlq_total", {"error_class": "WrongType"}) == 2.0
    assert total(SNAP, "raylane_nothing_total") == 0.0


def test_quantile_per_label_equals_the_demos_histogram_quantile() -> None:
    for stage in ("score_ms", "batch_ms"):
        for q in (0.5, 0.99):
            assert quantile(
                SNAP, "raylane_stage_latency_ms", q, {"stage": stage}
            ) == histogram_quantile(SNAP, "raylane_stage_latency_ms", q, f"stage={stage}")
    # over every stage: the buckets summed (200 observations, 10 under 1 ms, 140 under 5 ms)
    assert quantile(SNAP, "raylane_stage_latency_ms", 0.05) == pytest.approx(1.0)
    assert quantile(SNAP, "raylane_stage_latency_ms", 0.5) == pytest.approx(1 + 4 * 90 / 130)
    assert math.isnan(quantile({}, "raylane_stage_latency_ms", 0.5))


def test_rates_between_snapshots_and_counter_resets() -> None:
    h = MetricsHistory()
    h.add({"raylane_events_in_total{}": 10.0}, t=100.0)
    h.add({"raylane_events_in_total{}": 30.0}, t=102.0)
    h.add({"raylane_events_in_total{}": 4.0}, t=104.0)  # a replica restarted: counts from 0
    times, rates = h.rate_series("raylane_events_in_total")
    assert times == [102.0, 104.0]
    assert rates == {"": [10.0, 2.0]}
    assert h.latest == {"raylane_events_in_total{}": 4.0}


def test_rates_by_label_fill_a_group_that_appears_late() -> None:
    h = MetricsHistory()
    h.add({"c_total{decision=approved}": 0.0}, t=0.0)
    h.add({"c_total{decision=approved}": 10.0}, t=1.0)
    h.add({"c_total{decision=approved}": 20.0, "c_total{decision=flagged}": 3.0}, t=2.0)
    _, rates = h.rate_series("c_total", by="decision")
    assert rates == {"approved": [10.0, 10.0], "flagged": [0.0, 3.0]}


def test_history_forgets_old_snapshots() -> None:
    h = MetricsHistory(keep_s=10)
    for t in range(0, 30, 5):
        h.add({"x{}": float(t)}, t=float(t))
    assert [s.t for s in h.snapshots] == [15.0, 20.0, 25.0]


def test_quantile_series_uses_the_observations_between_snapshots() -> None:
    h = MetricsHistory()
    b = "raylane_event_to_scored_latency_ms_bucket"
    h.add({f"{b}{{le=10}}": 100.0, f"{b}{{le=100}}": 100.0, f"{b}{{le=+Inf}}": 100.0}, t=0.0)
    h.add({f"{b}{{le=10}}": 100.0, f"{b}{{le=100}}": 100.0, f"{b}{{le=+Inf}}": 100.0}, t=1.0)
    h.add({f"{b}{{le=10}}": 100.0, f"{b}{{le=100}}": 200.0, f"{b}{{le=+Inf}}": 200.0}, t=2.0)
    times, p50 = h.quantile_series("raylane_event_to_scored_latency_ms", 0.5)
    assert times == [1.0, 2.0]
    assert p50[0] is None
    assert p50[1] == pytest.approx(55.0)  # the 100 new ones all lie in (10, 100]


def test_a_prometheus_vector_becomes_a_snapshot_of_one_pipeline() -> None:
    vector = [
        {
            "metric": {
                "__name__": "raylane_events_in_total",
                "pipeline": "fraud",
                "instance": "10.0.0.1:9000",
                "job": "raylane",
            },
            "value": [1, "5"],
        },
        {
            "metric": {
                "__name__": "raylane_events_in_total",
                "pipeline": "fraud",
                "instance": "10.0.0.2:9000",
                "job": "raylane",
            },
            "value": [1, "7"],
        },
        {"metric": {"__name__": "raylane_events_in_total", "pipeline": "churn"}, "value": [1, "9"]},
        {
            "metric": {"__name__": "raylane_model_swaps_total", "deployment": "fraud-model-x"},
            "value": [1, "1"],
        },
    ]
    assert samples_of_vector(vector, "fraud") == {
        "raylane_events_in_total{}": 12.0,
        "raylane_model_swaps_total{deployment=fraud-model-x}": 1.0,
    }


def test_prometheus_source_queries_the_http_api(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_get(url: str, params: dict[str, str], timeout: float) -> httpx.Response:
        seen.update(url=url, **params)
        body = {
            "status": "success",
            "data": {
                "result": [
                    {
                        "metric": {"__name__": "raylane_batches_total", "pipeline": "fraud"},
                        "value": [1, "3"],
                    }
                ]
            },
        }
        return httpx.Response(200, json=body, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    assert PrometheusSource("http://prom:9090/", "fraud")() == {"raylane_batches_total{}": 3.0}
    assert seen["url"] == "http://prom:9090/api/v1/query"
    assert seen["query"] == '{__name__=~"raylane_.+"}'

    def refused(url: str, params: dict[str, str], timeout: float) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "get", refused)
    with pytest.raises(DependencyError, match="cannot query the Prometheus server"):
        PrometheusSource("http://prom:9090", "fraud")()
