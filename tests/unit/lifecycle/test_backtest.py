"""The backtest's pure half: feature maps to columns, scoring, de-duplication, metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from raylane.lifecycle.backtest import (
    decision_threshold,
    dedupe_scored,
    evaluate,
    feature_columns,
    score_frame,
)


class Linear:
    """A model whose score is a weighted sum of two columns (NaN counts as 0)."""

    def __init__(self, wa: float, wb: float) -> None:
        self.feature_names = ["a", "b"]
        self.wa, self.wb = wa, wb
        self.calls = 0

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        self.calls += 1
        a = np.nan_to_num(columns["a"])
        b = np.nan_to_num(columns["b"])
        return 1 / (1 + np.exp(-(self.wa * a + self.wb * b)))


def test_feature_maps_in_every_form_give_the_same_columns():
    maps = [{"a": 1.5, "b": None}, {"a": -2.0, "b": 3.0}, {"b": 0.25}]
    as_dicts = pd.DataFrame({"features": maps})
    as_json = pd.DataFrame({"features": [json.dumps(m) for m in maps]})
    as_pairs = pd.DataFrame({"features": [list(m.items()) for m in maps]})
    for frame in (as_dicts, as_json, as_pairs):
        cols = feature_columns(frame, ["a", "b"])
        np.testing.assert_array_equal(cols["a"], [1.5, -2.0, np.nan])
        np.testing.assert_array_equal(cols["b"], [np.nan, 3.0, 0.25])


def test_score_frame_calls_each_model_once_per_batch():
    frame = pd.DataFrame(
        {"event_id": ["e1", "e2"], "features": [{"a": 1, "b": 2}, {"a": 0, "b": 0}]}
    )
    m1, m2 = Linear(1, 1), Linear(-1, 0)
    out = score_frame(frame, {"one": m1, "two": m2})
    assert (m1.calls, m2.calls) == (1, 1)
    np.testing.assert_allclose(out["score_one"], 1 / (1 + np.exp(-np.array([3.0, 0.0]))))
    np.testing.assert_allclose(out["score_two"], [1 / (1 + np.exp(1)), 0.5])
    empty = score_frame(frame.iloc[:0], {"one": m1})
    assert list(empty["score_one"]) == [] and m1.calls == 1


def test_dedupe_keeps_the_first_scoring_of_an_event():
    f = pd.DataFrame(
        {
            "event_id": ["x", "y", "x"],
            "_timestamp": pd.to_datetime([2, 1, 3], unit="ms", utc=True),
            "_partition": [0, 0, 1],
            "_offset": [5, 4, 0],
            "score_m": [0.1, 0.2, 0.9],
        }
    )
    d = dedupe_scored(f)
    assert sorted(d["event_id"]) == ["x", "y"]
    assert d.set_index("event_id").loc["x", "score_m"] == 0.1


def test_evaluate_equals_sklearn_on_the_labelled_events():
    rng = np.random.default_rng(3)
    n = 400
    y = rng.random(n) < 0.2
    a = rng.normal(size=n) + 2 * y
    b = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "features": [{"a": x, "b": z} for x, z in zip(a, b, strict=True)],
        }
    )
    scored = score_frame(frame, {"cand": Linear(1.0, 0.5), "champ": Linear(0.8, 0.0)})
    labelled = rng.random(n) < 0.8  # a fifth of the events never got a label
    labels = pd.DataFrame({"event_id": frame["event_id"][labelled], "label": y[labelled]})
    rep = evaluate(scored, labels, 0.7, candidate="cand", champion="champ")
    assert rep.events == n and rep.labelled == int(labelled.sum())
    for m in ("cand", "champ"):
        s = scored[f"score_{m}"].to_numpy()[labelled]
        q = rep.models[m]
        assert q.auc == pytest.approx(roc_auc_score(y[labelled], s))
        assert q.precision == pytest.approx(precision_score(y[labelled], s > 0.7))
        assert q.recall == pytest.approx(recall_score(y[labelled], s > 0.7))
        assert q.positives == int(y[labelled].sum())
    sa, sb = scored["score_cand"].to_numpy(), scored["score_champ"].to_numpy()
    assert rep.agreement == pytest.approx(np.mean((sa > 0.7) == (sb > 0.7)))
    assert rep.mean_abs_delta == pytest.approx(np.mean(np.abs(sa - sb)))
    assert list(rep.table().index) == ["cand", "champ"]


def test_auc_is_none_with_one_class_and_precision_none_without_flags():
    scored = pd.DataFrame({"event_id": ["a", "b"], "score_m": [0.1, 0.2]})
    labels = pd.DataFrame({"event_id": ["a", "b"], "label": [False, False]})
    q = evaluate(scored, labels, 0.5).models["m"]
    assert q.auc is None and q.precision is None and q.recall is None and q.flag_rate == 0.0


def test_decision_threshold_reads_the_score_rule():
    from pathlib import Path

    from raylane.config import load_serve_config
    from raylane.errors import ConfigError

    root = Path(__file__).resolve().parents[3]
    _, cfg = load_serve_config(root / "serve_configs" / "fraud.yaml")
    assert decision_threshold(cfg) == 0.85
    no_rule = cfg.model_copy(update={"decision": cfg.decision.model_copy(update={"rules": ()})})
    with pytest.raises(ConfigError, match="pass threshold"):
        decision_threshold(no_rule)


def test_the_backtest_command_prints_every_figure_and_full_uris_at_80_columns(
    monkeypatch, tmp_path
):
    from typer.testing import CliRunner

    from raylane import sdk
    from raylane.cli import app

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 400)
    scored = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(400)],
            "score_candidate": np.clip(0.6 * y + rng.normal(0.2, 0.2, 400), 0, 1),
            "score_champion": np.clip(0.5 * y + rng.normal(0.25, 0.2, 400), 0, 1),
        }
    )
    labels = pd.DataFrame({"event_id": scored["event_id"], "label": y})
    report = evaluate(scored, labels, 0.5, candidate="candidate", champion="champion")
    uris = {
        "candidate": "models:/fraud-a-rather-long-registered-model-name/12",
        "champion": "models:/fraud-a-rather-long-registered-model-name/11",
    }
    report.extra.update(uris=uris, files=3, engine="local")
    monkeypatch.setattr(sdk.Pipeline, "backtest", lambda self, *a, **k: report)
    out = tmp_path / "bt.json"
    res = CliRunner().invoke(
        app,
        ["backtest", "fraud", "--candidate", uris["candidate"], "--json", str(out)],
        env={"COLUMNS": "80"},
    )
    assert res.exit_code == 0, res.output
    assert "ROC AUC" in res.output and "flag rate" in res.output
    assert "scored on local" in res.output
    for name, uri in uris.items():
        assert f"{name}: {uri}" in res.output
        assert f"{report.models[name].auc:.3f}" in res.output
    assert (
        json.loads(out.read_text())["models"]["candidate"]["auc"] == report.models["candidate"].auc
    )
