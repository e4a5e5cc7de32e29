"""Backtests: score archived events with a candidate and the champion, compare, and measure
quality against delayed labels.

Plain pandas and numpy, no Ray: :func:`feature_columns` turns the feature map every scored
record carries (the values the served model saw) into columns, :func:`score_frame` scores a
frame with any number of models (one call per model), and :func:`evaluate` joins the scores
with the labels by ``event_id`` and computes, per model, ROC AUC and precision / recall /
flag rate at the pipeline's decision threshold, plus how the candidate and the champion
agree. ``raylane.serving.batch`` runs :func:`score_frame` inside Ray Data's ``map_batches``;
the same functions on one pandas frame give the same figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from raylane.config import PipelineConfig
from raylane.errors import ConfigError

__all__ = [
    "BacktestReport",
    "ModelQuality",
    "Scorer",
    "decision_threshold",
    "dedupe_scored",
    "evaluate",
    "feature_columns",
    "score_frame",
]


class Scorer(Protocol):
    """What :func:`score_frame` needs of a model (a :class:`raylane.registry.LoadedModel`)."""

    @property
    def feature_names(self) -> list[str]: ...

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray: ...


def decision_threshold(cfg: PipelineConfig) -> float:
    """The score threshold of the first decision rule that reads ``score > t`` (or ``>=``).

    Raises ConfigError naming the rules when none does: pass a threshold explicitly then.
    """
    for rule in cfg.decision.rules:
        for c in rule.conditions():
            if c.column == "score" and c.op in (">", ">="):
                return c.value
    raise ConfigError(
        f"pipeline {cfg.name} has no decision rule `score > t` "
        f"({[r.when for r in cfg.decision.rules]}); pass threshold=... to the backtest",
        stage="backtest",
    )


def _as_map(v: Any) -> Mapping[str, Any]:
    if isinstance(v, Mapping):
        return v
    if isinstance(v, str | bytes):
        out = json.loads(v)
        return out if isinstance(out, dict) else {}
    if isinstance(v, Iterable):  # pyarrow's map type arrives as a list of (key, value) pairs
        return dict(v)
    return {}


def feature_columns(
    frame: pd.DataFrame, names: Sequence[str], column: str = "features"
) -> dict[str, np.ndarray]:
    """Columns `names` (float64; NaN where missing) from the feature map column of `frame`.

    The map is a dict (read from Kafka), a JSON string (the archive stores nested values as
    JSON) or a list of (key, value) pairs (pyarrow's map type).
    """
    maps = [_as_map(v) for v in frame[column].tolist()]
    out: dict[str, np.ndarray] = {}
    for n in names:
        vals = [m.get(n) for m in maps]
        out[n] = np.array([math.nan if v is None else float(v) for v in vals], dtype=np.float64)
    return out


def score_frame(
    frame: pd.DataFrame, models: Mapping[str, Scorer], column: str = "features"
) -> pd.DataFrame:
    """`frame` with a ``score_<label>`` column per model: one predict call per model."""
    out = frame.copy()
    if len(frame) == 0:
        for label in models:
            out[f"score_{label}"] = np.empty(0, dtype=np.float64)
        return out
    names = sorted({n for m in models.values() for n in m.feature_names})
    cols = feature_columns(frame, names, column)
    for label, m in models.items():
        out[f"score_{label}"] = np.asarray(m.predict(cols), dtype=np.float64)
    return out


def dedupe_scored(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per event_id: the first scoring of an event (at-least-once can score twice)."""
    order = [c for c in ("_timestamp", "_partition", "_offset") if c in frame.columns]
    f = frame.sort_values(order, kind="stable") if order else frame
    return f.drop_duplicates("event_id", keep="first").reset_index(drop=True)


@dataclass(frozen=True)
class ModelQuality:
    """One model's figures on the labelled events of a backtest."""

    model: str
    n: int
    positives: int
    auc: float | None
    precision: float | None
    recall: float | None
    flag_rate: float
    threshold: float


@dataclass(frozen=True)
class BacktestReport:
    """What a backtest found: events scored, labelled, per-model quality, agreement."""

    events: int
    labelled: int
    threshold: float
    models: dict[str, ModelQuality]
    #: share of events where the candidate's decision equals the champion's (all events)
    agreement: float | None = None
    mean_abs_delta: float | None = None
    p95_abs_delta: float | None = None
    pair: tuple[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per model: n, positives, AUC, precision, recall, flag rate."""
        return pd.DataFrame([asdict(q) for q in self.models.values()]).set_index("model")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quality(model: str, y: np.ndarray, s: np.ndarray, threshold: float) -> ModelQuality:
    from sklearn.metrics import roc_auc_score

    flagged = s > threshold
    tp = int(np.sum(flagged & (y == 1)))
    pos = int(np.sum(y == 1))
    auc = float(roc_auc_score(y, s)) if 0 < pos < len(y) else None  # undefined with one class
    return ModelQuality(
        model=model,
        n=len(y),
        positives=pos,
        auc=auc,
        precision=tp / int(flagged.sum()) if flagged.any() else None,
        recall=tp / pos if pos else None,
        flag_rate=float(flagged.mean()) if len(y) else 0.0,
        threshold=threshold,
    )


def evaluate(
    scored: pd.DataFrame,
    labels: pd.DataFrame,
    threshold: float,
    *,
    candidate: str | None = None,
    champion: str | None = None,
) -> BacktestReport:
    """Quality per ``score_<model>`` column of `scored` against `labels` (event_id, label).

    Events without a label count in :attr:`BacktestReport.events` and in the agreement, not
    in the quality figures. A label repeated for an event counts once (the last one).
    """
    scored = dedupe_scored(scored)
    models = [c[len("score_") :] for c in scored.columns if c.startswith("score_")]
    lab = labels.drop_duplicates("event_id", keep="last")[["event_id", "label"]]
    joined = scored.merge(lab, on="event_id", how="inner")
    y = joined["label"].astype(np.int8).to_numpy()
    quality = {
        m: _quality(m, y, joined[f"score_{m}"].to_numpy(dtype=np.float64), threshold)
        for m in models
    }
    report: dict[str, Any] = {}
    if candidate and champion and len(scored):
        a = scored[f"score_{candidate}"].to_numpy(dtype=np.float64)
        b = scored[f"score_{champion}"].to_numpy(dtype=np.float64)
        d = np.abs(a - b)
        report = {
            "agreement": float(np.mean((a > threshold) == (b > threshold))),
            "mean_abs_delta": float(d.mean()),
            "p95_abs_delta": float(np.quantile(d, 0.95)),
            "pair": (candidate, champion),
        }
    return BacktestReport(
        events=len(scored), labelled=len(joined), threshold=threshold, models=quality, **report
    )
