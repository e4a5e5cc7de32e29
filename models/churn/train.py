"""Train the churn-risk models on simulated activity and register them in MLflow.

The second use case: ``churn.activity`` events (session length, pages, days since the
last login) plus streaming window aggregates per user, computed with
:func:`raylane.features.window.reference_window_features` exactly as serving does.
Columns come from ``serve_configs/churn.yaml`` when it exists, else from
:data:`DEFAULT_FEATURES` (the features section that config should carry). Registered
model ``churn``: ``champion`` (all columns) and ``challenger`` (event fields only).
Run ``python models/churn/train.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from raylane.config import FeaturesConfig, load_serve_config
from raylane.features.window import reference_window_features
from raylane.testing import LabeledEvent, World

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # models/: shared helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _training import (
    BASE_PARAMS,
    ModelSpec,
    TrainingSet,
    TrainResult,
    print_results,
    simulate_fit_register,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_FEATURES",
    "build_dataset",
    "challenger_for",
    "load_features",
    "main",
    "train",
]

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_configs" / "churn.yaml"
REGISTERED_NAME = "churn"

#: The features section serve_configs/churn.yaml should carry (used when it is absent).
DEFAULT_FEATURES = FeaturesConfig.model_validate(
    {
        "feast_repo": "features",
        "event": ["session_minutes", "pages_viewed", "days_since_last_login"],
        "windows": [
            {
                "name": "user_events_30m",
                "kind": "count",
                "key_fields": ["user_id"],
                "window_s": 1800,
            },
            {
                "name": "user_session_minutes_30m",
                "kind": "sum",
                "key_fields": ["user_id"],
                "value_field": "session_minutes",
                "window_s": 1800,
            },
            {
                "name": "user_pages_30m",
                "kind": "sum",
                "key_fields": ["user_id"],
                "value_field": "pages_viewed",
                "window_s": 1800,
            },
            {
                "name": "user_login_gap_days_30m",
                "kind": "sum",
                "key_fields": ["user_id"],
                "value_field": "days_since_last_login",
                "window_s": 1800,
            },
        ],
    }
)

CHAMPION = ModelSpec(
    "champion",
    {**BASE_PARAMS, "max_depth": 5, "eta": 0.1, "subsample": 0.8},
    200,
    description="event fields + 30-minute window aggregates, depth 5, 200 rounds",
)


def challenger_for(features: FeaturesConfig) -> ModelSpec:
    """The challenger: no window aggregates (event fields only), shallow trees."""
    return ModelSpec(
        "challenger",
        {**BASE_PARAMS, "max_depth": 3, "eta": 0.15},
        80,
        drop_columns=tuple(w.name for w in features.windows),
        description="event fields only, depth 3, 80 rounds",
    )


CHALLENGER = challenger_for(DEFAULT_FEATURES)


def load_features(path: str | Path = SERVE_CONFIG) -> FeaturesConfig:
    """The features section of the churn serve config, or DEFAULT_FEATURES without one."""
    return load_serve_config(path)[1].features if Path(path).exists() else DEFAULT_FEATURES


def build_dataset(events: Sequence[LabeledEvent], features: FeaturesConfig) -> TrainingSet:
    """Feature rows for `events` (in arrival order), without the first, warming-up window."""
    if features.online:
        raise ValueError(
            "the simulated churn world has no online feature views; "
            f"remove {[v.view for v in features.online]} from features.online"
        )
    raw = [e.event for e in events]
    df = pd.DataFrame(raw)
    cols: dict[str, np.ndarray] = {f: df[f].to_numpy(dtype=np.float64) for f in features.event}
    cols.update(reference_window_features(raw, features.windows))
    t = df["event_time"].to_numpy()
    warm = max((w.window_s for w in features.windows), default=0.0) * 1000
    keep = t >= t[0] + warm
    columns = features.columns()
    frame = pd.DataFrame({c: cols[c][keep] for c in columns})
    label = np.array([e.label for e in events], dtype=np.int8)[keep]
    return TrainingSet(frame, label, t[keep], columns, features)


def train(
    *,
    world: World | None = None,
    seed: int = 7,
    n_users: int = 2000,
    hours: float = 1.0,
    rate: float | None = None,
    end: datetime | None = None,
    features: FeaturesConfig | None = None,
    specs: Sequence[ModelSpec] | None = None,
    log: bool = True,
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
    progress: bool = True,
    nthread: int | None = 1,
) -> TrainResult:
    """Simulate activity, build features, fit and evaluate `specs`; log + register if `log`.

    `specs` defaults to CHAMPION and the challenger for `features` (no window columns).
    """
    world = world or World(seed, n_users=n_users)
    feats = features or load_features()
    end = end or datetime.now(UTC).replace(microsecond=0)
    rate = rate or world.nominal_rate
    return simulate_fit_register(
        f"{hours:g} h of activity at {rate:g}/s",
        lambda: world.activity_history(end, hours=hours, rate=rate),
        lambda events: build_dataset(events, feats),
        specs or (CHAMPION, challenger_for(feats)),
        registered_name=REGISTERED_NAME,
        extra_params={
            "world_seed": world.seed,
            "n_users": world.n_users,
            "history_hours": hours,
            "rate": rate,
        },
        log=log,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        nthread=nthread,
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train, print held-out AUCs, register churn@champion and churn@challenger."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: env)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--n-users", type=int, default=2000)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--no-log", action="store_true", help="fit and evaluate only")
    a = p.parse_args(argv)
    res = train(
        seed=a.seed, n_users=a.n_users, hours=a.hours, log=not a.no_log, tracking_uri=a.tracking_uri
    )
    return print_results(res, "churn models", min_auc={"champion": 0.9})


if __name__ == "__main__":
    raise SystemExit(main())
