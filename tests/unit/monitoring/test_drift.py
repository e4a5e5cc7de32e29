"""Drift logic without services: windows, Evidently verdicts, events, state, config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.errors import ConfigError
from raylane.monitoring.drift import DriftDetector, WindowBuffer, event_row
from raylane.monitoring.drift_monitor import DriftMonitor
from raylane.monitoring.drift_state import DriftState

ROOT = Path(__file__).resolve().parents[3]


def _args() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "serve_configs" / "fraud.yaml").read_text())
    return copy.deepcopy(doc["applications"][0]["args"])


def _event(
    i: int, version: str = "1", t: int | None = None, **feats: float | None
) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "model_name": "fraud",
        "model_version": version,
        "event_time": t if t is not None else 1_000 * i,
        "score": 0.1,
        "features": feats,
    }


def test_event_row_takes_features_then_top_level_fields_and_nan_for_missing() -> None:
    row = event_row(
        {"features": {"a": 1.0, "b": None}, "c": 3, "score": 0.5}, ["a", "b", "c", "d"], "score"
    )
    assert row["a"] == 1.0 and row["c"] == 3.0 and row["score"] == 0.5
    assert np.isnan(row["b"]) and np.isnan(row["d"])


def test_windows_close_by_count_and_by_time_with_a_minimum() -> None:
    buf = WindowBuffer(["a"], "score", size=3)
    closed = [w for i in range(7) for w in buf.add(_event(i, a=1.0))]
    assert (
        [w.count for w in closed] == [3, 3] and buf.current is not None and buf.current.count == 1
    )
    assert closed[0].last_correlation_id == "c2" and (closed[0].start_ms, closed[0].end_ms) == (
        0,
        2000,
    )

    buf = WindowBuffer(["a"], "score", size=100, span_s=5, min_size=3)
    closed = [
        w for i, t in enumerate([0, 6000, 7000, 8000]) for w in buf.add(_event(i, t=t, a=1.0))
    ]
    # 6 s passed after 2 events: too few, keeps filling; the third event closes it
    assert [w.count for w in closed] == [3]


def test_a_new_model_version_starts_a_new_window() -> None:
    buf = WindowBuffer(["a"], "score", size=10, min_size=2)
    assert buf.add(_event(0, "1", a=1.0)) == []
    assert buf.add(_event(1, "2", a=1.0)) == [] and buf.dropped == 1  # one event: below the minimum
    buf.add(_event(2, "2", a=1.0))
    closed = buf.add(_event(3, "3", a=1.0))
    assert [(w.model_version, w.count) for w in closed] == [("2", 2)]


def _reference(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"amount": rng.lognormal(3, 0.7, n), "risk": rng.beta(2, 8, n), "score": rng.beta(1, 30, n)}
    )


def test_detector_finds_the_shifted_column_and_not_the_others() -> None:
    det = DriftDetector(
        _reference(),
        ["amount", "risk"],
        "score",
        drift_share=0.3,
        per_column_method={"amount": "psi", "risk": "psi", "score": "psi"},
    )
    same = _reference(500, seed=1)
    res, _ = det.evaluate(same)
    assert not res.drifted and res.n_drifted == 0 and len(res.columns) == 3
    shifted = same.assign(amount=same["amount"] * 5)
    res, _ = det.evaluate(shifted)
    assert res.drifted and [c.column for c in res.drifted_columns] == ["amount"]
    c = res.drifted_columns[0]
    assert c.method == "PSI" and c.threshold == pytest.approx(0.1) and c.score > c.threshold
    assert (
        res.drift_share == pytest.approx(1 / 3)
        and res.prediction is not None
        and not res.prediction.drifted
    )


@pytest.mark.parametrize("method", [None, "psi", "ks"])
def test_direct_column_tests_match_evidentlys_report(method: str | None) -> None:
    """The per-column tests run directly give the Report's ValueDrift scores and verdicts."""
    ref = _reference(3000)
    cur = _reference(500, seed=2).assign(amount=lambda f: f["amount"] * 1.3)
    cur.loc[:20, "risk"] = np.nan
    methods = {c: method for c in ref.columns} if method else None
    det = DriftDetector(ref, ["amount", "risk"], "score", per_column_method=methods)
    direct = det.test_columns(cur)
    via_report = DriftDetector.report_result(det.report(cur).dict(), det.compared, "score", 0.5)
    assert (
        [c.column for c in direct.columns] == [c.column for c in via_report.columns] == det.compared
    )
    for a, b in zip(direct.columns, via_report.columns, strict=True):
        assert (
            a.score == pytest.approx(b.score)
            and a.drifted == b.drifted
            and a.threshold == b.threshold
        )
    assert direct.drift_share == pytest.approx(via_report.drift_share)
    assert any(c.drifted for c in direct.columns)  # amount x1.3 is caught by every method


def test_detector_names_columns_the_reference_lacks() -> None:
    with pytest.raises(ConfigError, match=r"no column\(s\) \['velocity'\]"):
        DriftDetector(_reference(), ["amount", "velocity"], "score")


def test_monitor_builds_a_valid_model_drift_event_and_keeps_the_alert_open_until_clean(
    tmp_path: Path,
) -> None:
    args = _args()
    args["drift"] = {
        "window_size": 500,
        "method": "psi",
        "drift_share": 0.3,
        "columns": ["amount"],
        "clear_after": 2,
    }
    cfg = PipelineConfig.from_args(args)
    ref = _reference().rename(columns={"risk": "user_risk_profile__risk_score"})
    mon = DriftMonitor(cfg, lambda name, version: ref, report_dir=tmp_path)
    rng = np.random.default_rng(5)

    def window(scale: float) -> list[Any]:
        amounts, scores = rng.lognormal(3, 0.7, 500) * scale, rng.beta(1, 30, 500)
        evs = [
            {**_event(i, amount=float(a)), "score": float(sc)}
            for i, (a, sc) in enumerate(zip(amounts, scores, strict=True))
        ]
        closed = mon.add(evs)
        assert len(closed) == 1
        return [mon.evaluate(closed[0])]

    [drifted] = window(5.0)
    assert drifted.event is not None and drifted.state.open
    ev = drifted.event
    Codec.for_contract("model.drift").encode(ev)  # valid under its contract
    assert ev["drifted_columns"][0]["column"] == "amount" and ev["correlation_id"] == "c499"
    assert (
        ev["window_count"] == 500
        and ev["reference_count"] == len(ref)
        and ev["columns_compared"] == 2
    )
    assert Path(ev["report_uri"].removeprefix("file://")).is_file()
    [clean1] = window(1.0)
    assert clean1.event is None and clean1.state.open  # clear_after: 2
    [clean2] = window(1.0)
    assert not clean2.state.open and clean2.state.drifted_columns == []


def test_state_json_has_exactly_the_fields_the_promote_gate_reads() -> None:
    st = DriftState(
        open=True,
        model_name="fraud",
        model_version="3",
        drift_share=0.6,
        threshold=0.5,
        drifted_columns=["amount"],
        window_end="2026-11-26T17:00:00+00:00",
        updated_at="2026-11-26T17:00:01+00:00",
    )
    import json

    doc = json.loads(st.to_json())
    assert set(doc) == {
        "open",
        "model_name",
        "model_version",
        "drift_share",
        "threshold",
        "drifted_columns",
        "window_end",
        "updated_at",
    }
    assert DriftState.from_json(st.to_json()) == st


def test_drift_config_errors_name_the_path_and_values() -> None:
    args = _args()
    args["drift"] = {"window_size": 100, "min_window_size": 200}
    with pytest.raises(
        ConfigError, match=r"min_window_size \(200\) must be <= window_size \(100\)"
    ):
        PipelineConfig.from_args(args)
    args["drift"] = {"columns": ["nope"]}
    with pytest.raises(ConfigError, match=r"drift.columns \['nope'\] are not feature columns"):
        PipelineConfig.from_args(args)
    args["drift"] = {"windw_size": 3}
    with pytest.raises(ConfigError, match=r"args\.drift\.windw_size: unknown key"):
        PipelineConfig.from_args(args)
