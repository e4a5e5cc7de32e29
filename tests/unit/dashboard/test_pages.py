"""The figures each dashboard page shows, shaped from what the platform keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raylane.config import PipelineConfig, load_serve_config
from raylane.dashboard.pages import actions_page, drift_page, pipeline_page, shadow_page, verdict
from raylane.dashboard.samples import MetricsHistory
from raylane.lifecycle.gates import evaluate_gates
from raylane.lifecycle.shadow_stats import aggregate
from raylane.monitoring.drift_state import DriftState

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1]


def _entry(
    t: float, p: list[float], s: list[float], pv: str = "1", sv: str = "2"
) -> dict[str, Any]:
    """One batch entry as ``batch_entry`` writes it (threshold 0.85 flags)."""
    pf = [int(x > 0.85) for x in p]
    sf = [int(x > 0.85) for x in s]
    return {
        "t": t,
        "pv": pv,
        "sv": sv,
        "pm": "fraud",
        "sm": "fraud",
        "p": p,
        "s": s,
        "pf": pf,
        "sf": sf,
        "ag": [int(a == b) for a, b in zip(pf, sf, strict=True)],
        "pl": 2.0 + t % 3,
        "sl": 3.0 + t % 5,
    }


def _entries(n_batches: int, size: int, seed: int = 3, pv: str = "1") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_batches):
        p = rng.uniform(0, 1, size)
        s = np.clip(p + rng.normal(0, 0.03, size), 0, 1)
        out.append(_entry(1000.0 + i, p.round(6).tolist(), s.round(6).tolist(), pv=pv))
    return out[::-1]  # the store keeps them newest first


def test_shadow_page_shows_the_aggregate_and_gates_promote_uses(cfg: PipelineConfig) -> None:
    entries = _entries(30, 50)
    drift = DriftState(open=True, model_name="fraud", model_version="1", drifted_columns=["amount"])
    page = shadow_page(cfg, {"challenger": entries}, {"challenger": {"errors": 2}}, drift)
    (s,) = page["shadows"]
    agg = aggregate("challenger", entries, window=cfg.promotion.window, counts={"errors": 2})
    gates = evaluate_gates(cfg.name, agg, cfg.promotion, lambda _p: drift)
    assert s["aggregate"]["n"] == agg.n == 1500
    assert s["aggregate"]["agreement_rate"] == agg.agreement_rate
    assert s["aggregate"]["p95_abs_delta"] == agg.p95_abs_delta
    assert s["aggregate"]["errors"] == 2
    assert [g["name"] for g in s["gates"]] == [g.name for g in gates]
    assert [g["passed"] for g in s["gates"]] == [g.passed for g in gates]
    # 1500 < min_samples 1000? no: 1500 >= 1000 passes; the open drift alert blocks
    assert s["verdict"].startswith("blocked: ") and "require_no_drift_alert FAILED" in s["verdict"]
    assert "min_samples" not in s["verdict"]
    # the series cover every event once; the histogram and scatter the window's
    assert sum(s["timeline"]["n"]) == 1500
    assert s["timeline"]["t"] == sorted(s["timeline"]["t"])
    assert sum(s["delta_histogram"]["counts"]) == 1500
    disagreements = sum(e["ag"].count(0) for e in entries)
    assert s["scatter"]["agree"].count(False) == disagreements
    assert len(s["scatter"]["primary"]) == len(s["scatter"]["shadow"]) <= 1500


def test_shadow_page_ready_to_promote_when_every_gate_passes(cfg: PipelineConfig) -> None:
    same = [_entry(1000.0 + i, [0.1] * 50, [0.1] * 50) for i in range(30)][::-1]
    for e in same:
        e["sl"] = e["pl"]  # as fast as the primary
    page = shadow_page(cfg, {"challenger": same}, {}, None)
    assert page["shadows"][0]["verdict"] == "ready to promote"


def test_shadow_page_window_is_the_newest_version_pair(cfg: PipelineConfig) -> None:
    new = _entries(4, 10, pv="2")
    old = _entries(6, 10, seed=4, pv="1")
    page = shadow_page(cfg, {"challenger": new + old}, {}, None)
    s = page["shadows"][0]
    assert s["aggregate"]["n"] == 40 and s["aggregate"]["primary_version"] == "2"
    assert sum(s["delta_histogram"]["counts"]) == 40
    assert sum(s["timeline"]["n"]) == 100  # the timeline spans both pairs
    assert s["verdict"].startswith("blocked: min_samples FAILED")


def test_shadow_timeline_breaks_where_traffic_paused(cfg: PipelineConfig) -> None:
    early = [_entry(1000.0 + i, [0.1] * 5, [0.1] * 5) for i in range(60)]
    late = [_entry(5000.0 + i, [0.9] * 5, [0.1] * 5) for i in range(60)]
    tl = shadow_page(cfg, {"challenger": (early + late)[::-1]}, {}, None)["shadows"][0]["timeline"]
    assert None in tl["agreement"]  # one gap between the two runs
    gap = tl["agreement"].index(None)
    assert set(tl["agreement"][:gap]) == {1.0} and set(tl["agreement"][gap + 1 :]) == {0.0}
    assert sum(n for n in tl["n"] if n) == 600


def test_shadow_page_without_comparisons(cfg: PipelineConfig) -> None:
    s = shadow_page(cfg, {}, {}, None)["shadows"][0]
    assert s["aggregate"]["n"] == 0 and s["aggregate"]["agreement_rate"] is None
    assert s["delta_histogram"] is None and s["scatter"] is None
    assert "no comparisons yet" in s["verdict"]


def test_verdict_texts() -> None:
    assert verdict([]) == "not gated"


def _snap(events: float, flagged: float, lag: dict[str, float]) -> dict[str, float]:
    b = "raylane_stage_latency_ms_bucket"
    return {
        "raylane_events_in_total{}": events + 2,
        "raylane_events_scored_total{decision=approved}": events - flagged,
        "raylane_events_scored_total{decision=flagged}": flagged,
        "raylane_events_dlq_total{error_class=TruncatedEvent}": 2.0,
        "raylane_batch_size_sum{}": events,
        "raylane_batch_size_count{}": events / 10,
        "raylane_stage_latency_ms_count{stage=score_ms}": 10.0,
        "raylane_stage_latency_ms_count{stage=decode_ms}": 10.0,
        f"{b}{{le=2.0,stage=score_ms}}": 10.0,
        f"{b}{{le=+Inf,stage=score_ms}}": 10.0,
        f"{b}{{le=1.0,stage=decode_ms}}": 10.0,
        f"{b}{{le=+Inf,stage=decode_ms}}": 10.0,
        "raylane_breaker_open{dependency=redis}": 0.0,
        "raylane_consumer_paused{}": 0.0,
        **{f"raylane_consumer_lag{{partition={p}}}": v for p, v in lag.items()},
    }


def test_pipeline_page(cfg: PipelineConfig) -> None:
    h = MetricsHistory()
    h.add(_snap(100, 4, {"0": 5, "1": 0}), t=10.0)
    h.add(_snap(300, 10, {"10": 1, "2": 7, "0": 0, "1": 0}), t=12.0)
    page = pipeline_page(cfg, h)
    assert page["totals"]["in"] == 302 and page["totals"]["scored"] == 300
    assert page["totals"]["flagged"] == 10 and page["totals"]["dlq"] == 2
    assert page["rates"]["t"] == [12.0]
    assert page["rates"]["scored"] == [100.0] and page["rates"]["flagged"] == [3.0]
    assert page["rates"]["dlq"] == [0.0]
    assert list(page["lag"]) == ["0", "1", "2", "10"]
    assert list(page["stages"]) == ["decode_ms", "score_ms"]  # data-path order
    assert page["stages"]["score_ms"]["p50"] == pytest.approx(1.0)
    assert page["batch_size"]["mean"] == 10.0
    assert page["dlq_by_class"] == {"TruncatedEvent": 2.0}
    assert page["breakers"] == {"redis": 0.0} and page["scraped"]


def test_pipeline_page_labels_partitions_of_one_topic_by_number(cfg: PipelineConfig) -> None:
    h = MetricsHistory()
    h.add({f"raylane_consumer_lag{{partition=payments.x[{p}]}}": 1.0 for p in (10, 2, 0)}, t=1.0)
    page = pipeline_page(cfg, h)
    assert list(page["lag"]) == ["payments.x[0]", "payments.x[2]", "payments.x[10]"]
    assert list(page["lag_labels"].values()) == ["p0", "p2", "p10"]


def test_pipeline_page_before_any_scrape(cfg: PipelineConfig) -> None:
    page = pipeline_page(cfg, MetricsHistory())
    assert not page["scraped"] and page["totals"]["in"] == 0
    assert page["batch_size"]["mean"] is None and page["event_to_scored"]["p99"] is None


def _window(version: str, end: str, scores: dict[str, float], report: str | None = None) -> dict:
    cols = [
        {"column": c, "test": "psi", "threshold": 0.1, "score": v, "drifted": v >= 0.1}
        for c, v in scores.items()
    ]
    drifted = sum(c["drifted"] for c in cols) / len(cols)
    return {
        "model_name": "fraud",
        "model_version": version,
        "window_end": end,
        "count": 500,
        "drift_share": drifted,
        "threshold": 0.5,
        "drifted": drifted >= 0.5,
        "open": False,
        "columns": cols,
        "report": report,
    }


def test_drift_page_shows_the_serving_versions_windows(cfg: PipelineConfig) -> None:
    windows = [  # newest first, as read from Redis
        _window("3", "2026-11-28T10:02:00+00:00", {"amount": 0.3, "score": 0.2}, "r2.html"),
        _window("3", "2026-11-28T10:01:00+00:00", {"amount": 0.01, "score": 0.02}),
        _window("2", "2026-11-28T10:00:00+00:00", {"amount": 0.5, "other": 0.4}, "r1.html"),
    ]
    state = DriftState(open=True, model_name="fraud", model_version="3", drift_share=1.0)
    page = drift_page(cfg, state, windows, ["r2.html", "r1.html"])
    assert page["model_version"] == "3"
    assert [w["end"][11:16] for w in page["windows"]] == ["10:01", "10:02"]
    assert page["columns"] == ["amount", "score"]
    assert page["scores"] == [[0.01, 0.3], [0.02, 0.2]]
    assert page["windows"][1]["drifted_columns"] == ["amount", "score"]
    assert page["windows"][1]["report"] == "r2.html"
    # a pruned report is not linked
    assert drift_page(cfg, state, windows, [])["windows"][1]["report"] is None
    assert drift_page(cfg, None, [], [])["state"] is None


def test_actions_page(cfg: PipelineConfig) -> None:
    samples = {
        "raylane_actions_total{handler=publish,outcome=done}": 7.0,
        "raylane_actions_total{handler=publish,outcome=duplicate}": 1.0,
        "raylane_actions_total{handler=update_profile,outcome=done}": 7.0,
        "raylane_action_breaker_open{handler=webhook}": 1.0,
    }
    models = {"name": "fraud", "aliases": {"champion": "3"}, "versions": []}
    page = actions_page(cfg, samples, models, [{"action": "promote", "at": 1}])
    assert page["outcomes"] == {
        "publish": {"done": 7.0, "duplicate": 1.0},
        "update_profile": {"done": 7.0},
    }
    assert page["breakers"] == {"webhook": 1.0}
    assert [h["handler"] for h in page["handlers"]] == ["update_profile", "publish"]
    assert page["models"]["aliases"] == {"champion": "3"} and len(page["history"]) == 1
