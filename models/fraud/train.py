"""Train the fraud models on the simulated world and register them in MLflow.

The training set is built the way serving builds features, from the same config
(``serve_configs/fraud.yaml``): event fields, profile features joined from the world's
profile tables (the rows Feast serves online) and window features computed by
:func:`raylane.features.window.reference_window_features` over the history in arrival
order (the semantics the Redis implementation serves), so there is no training/serving
skew. Two genuinely different models are fitted and registered as ``fraud``:

* ``champion``: all feature columns, deeper trees;
* ``challenger``: no merchant-profile features, shallow trees, fewer rounds.

Fitting and evaluation (:func:`build_dataset`, :func:`fit`) are separate from logging
(:func:`log_and_register`), so tests train without MLflow. Run ``python models/fraud/train.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from raylane.config import FeaturesConfig, load_serve_config
from raylane.features.derived import compute_derived
from raylane.features.window import reference_window_features
from raylane.testing import LabeledEvent, World

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # models/: shared helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _training import (
    BASE_PARAMS,
    FittedModel,
    ModelSpec,
    TrainingSet,
    TrainResult,
    fit,
    log_and_register,
    print_results,
    simulate_fit_register,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "FittedModel",
    "ModelSpec",
    "TrainResult",
    "TrainingSet",
    "build_dataset",
    "fit",
    "load_features",
    "log_and_register",
    "main",
    "train",
]

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_configs" / "fraud.yaml"
REGISTERED_NAME = "fraud"

# Profile tables of the world, by Feast feature view name.
_PROFILE_TABLES: dict[str, Callable[[World, datetime], pd.DataFrame]] = {
    "user_risk_profile": World.user_profiles,
    "merchant_profile": World.merchant_profiles,
}


CHAMPION = ModelSpec(
    "champion",
    {
        **BASE_PARAMS,
        "max_depth": 6,
        "eta": 0.08,
        "subsample": 0.8,
        "colsample_bytree": 0.9,
        "min_child_weight": 2.0,
    },
    300,
    description="all feature columns, depth 6, 300 rounds",
)
CHALLENGER = ModelSpec(
    "challenger",
    {**BASE_PARAMS, "max_depth": 3, "eta": 0.15},
    80,
    drop_views=("merchant_profile",),
    description="no merchant-profile features, depth 3, 80 rounds",
)


def load_features(path: str | Path = SERVE_CONFIG) -> FeaturesConfig:
    """The features section of a serve config (defines the model's input columns)."""
    return load_serve_config(path)[1].features


def build_dataset(
    events: Sequence[LabeledEvent], world: World, features: FeaturesConfig, as_of: datetime
) -> TrainingSet:
    """Feature rows for `events` (in arrival order); ``prior`` events feed state only."""
    raw = [e.event for e in events]
    keep = np.array([e.kind != "prior" for e in events], dtype=bool)
    df = pd.DataFrame(raw)
    cols: dict[str, np.ndarray] = {f: df[f].to_numpy(dtype=np.float64) for f in features.event}
    for view in features.online:
        make = _PROFILE_TABLES.get(view.view)
        if make is None:
            raise ValueError(
                f"no simulated table for feature view {view.view!r}; known: "
                f"{sorted(_PROFILE_TABLES)}"
            )
        table = make(world, as_of).set_index(view.key)
        keys = df[view.entity_field]
        for feat, col in zip(view.features, view.columns(), strict=True):
            cols[col] = keys.map(table[feat]).to_numpy(dtype=np.float64)
    cols.update(reference_window_features(raw, features.windows))
    compute_derived(cols, features.derived)  # the same function the ingress runs per batch
    columns = features.columns()
    frame = pd.DataFrame({c: cols[c][keep] for c in columns})
    label = np.array([e.is_fraud for e in events], dtype=np.int8)[keep]
    return TrainingSet(frame, label, df["event_time"].to_numpy()[keep], columns, features)


def train(
    *,
    world: World | None = None,
    seed: int = 7,
    n_users: int = 2000,
    n_merchants: int = 300,
    hours: float = 2.0,
    rate: float | None = None,
    fraud_rate: float = 0.02,
    end: datetime | None = None,
    features: FeaturesConfig | None = None,
    specs: Sequence[ModelSpec] = (CHAMPION, CHALLENGER),
    log: bool = True,
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
    progress: bool = True,
    nthread: int | None = 1,
) -> TrainResult:
    """Simulate history, build features, fit and evaluate `specs`; log + register if `log`.

    `rate` defaults to the world's nominal rate (one payment per user every
    USER_PAYMENT_INTERVAL_S); serve traffic at the same per-user rate.
    """
    world = world or World(seed, n_users=n_users, n_merchants=n_merchants)
    feats = features or load_features()
    end = end or datetime.now(UTC).replace(microsecond=0)
    rate = rate or world.nominal_rate
    return simulate_fit_register(
        f"{hours:g} h of payments at {rate:g}/s",
        lambda: world.history(end, hours=hours, rate=rate, fraud_rate=fraud_rate),
        lambda events: build_dataset(events, world, feats, end),
        specs,
        registered_name=REGISTERED_NAME,
        extra_params={
            "world_seed": world.seed,
            "n_users": world.n_users,
            "n_merchants": world.n_merchants,
            "history_hours": hours,
            "rate": rate,
            "fraud_rate": fraud_rate,
            "user_interval_s": world.n_users / rate,
        },
        log=log,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        nthread=nthread,
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train, print held-out AUCs, register fraud@champion and fraud@challenger."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: env)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--n-users", type=int, default=2000)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=None, help="events/s (default: nominal)")
    p.add_argument("--fraud-rate", type=float, default=0.02)
    p.add_argument("--no-log", action="store_true", help="fit and evaluate only")
    a = p.parse_args(argv)
    res = train(
        seed=a.seed,
        n_users=a.n_users,
        hours=a.hours,
        rate=a.rate,
        fraud_rate=a.fraud_rate,
        log=not a.no_log,
        tracking_uri=a.tracking_uri,
    )
    return print_results(res, "fraud models")


if __name__ == "__main__":
    raise SystemExit(main())
