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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from raylane.config import FeaturesConfig, load_serve_config
from raylane.features.window import reference_window_features
from raylane.testing import USER_PAYMENT_INTERVAL_S, LabeledEvent, World

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_configs" / "fraud.yaml"
REGISTERED_NAME = "fraud"
REFERENCE_ROWS = 5000

# Profile tables of the world, by Feast feature view name.
_PROFILE_TABLES: dict[str, Callable[[World, datetime], pd.DataFrame]] = {
    "user_risk_profile": World.user_profiles,
    "merchant_profile": World.merchant_profiles,
}


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: XGBoost params, rounds and which feature views to leave out."""

    label: str
    params: dict[str, Any]
    num_boost_round: int
    drop_views: tuple[str, ...] = ()
    description: str = ""


_BASE = {"objective": "binary:logistic", "tree_method": "hist", "eval_metric": "auc", "seed": 0}
CHAMPION = ModelSpec(
    "champion",
    {**_BASE, "max_depth": 6, "eta": 0.08, "subsample": 0.8, "colsample_bytree": 0.9,
     "min_child_weight": 2.0},
    300,
    description="all feature columns, depth 6, 300 rounds",
)
CHALLENGER = ModelSpec(
    "challenger",
    {**_BASE, "max_depth": 3, "eta": 0.15},
    80,
    drop_views=("merchant_profile",),
    description="no merchant-profile features, depth 3, 80 rounds",
)


@dataclass(frozen=True)
class TrainingSet:
    """Feature columns (config order), labels and event times of the traffic rows."""

    frame: pd.DataFrame
    label: np.ndarray
    event_time: np.ndarray
    columns: list[str]
    features: FeaturesConfig

    def columns_for(self, spec: ModelSpec) -> list[str]:
        dropped = {c for v in self.features.online if v.view in spec.drop_views for c in v.columns()}
        return [c for c in self.columns if c not in dropped]

    def split(self, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of a time-based split: the last `test_fraction` is held out."""
        order = np.argsort(self.event_time, kind="stable")
        cut = int(len(order) * (1.0 - test_fraction))
        return order[:cut], order[cut:]


@dataclass(frozen=True)
class FittedModel:
    """A fitted booster, its columns and its held-out evaluation."""

    spec: ModelSpec
    booster: xgb.Booster
    feature_names: list[str]
    auc: float
    n_train: int
    n_test: int
    fit_seconds: float
    reference: pd.DataFrame = field(repr=False)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.feature_names].to_numpy(dtype=np.float32)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False))


@dataclass(frozen=True)
class TrainResult:
    """Fitted models by label, their registry references (if logged) and timings."""

    models: dict[str, FittedModel]
    registered: dict[str, Any]
    n_events: int
    fraud_rate: float
    seconds: float

    @property
    def champion(self) -> FittedModel:
        return self.models["champion"]

    @property
    def challenger(self) -> FittedModel:
        return self.models["challenger"]


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
            raise ValueError(f"no simulated table for feature view {view.view!r}; known: "
                             f"{sorted(_PROFILE_TABLES)}")
        table = make(world, as_of).set_index(view.key)
        keys = df[view.entity_field]
        for feat, col in zip(view.features, view.columns(), strict=True):
            cols[col] = keys.map(table[feat]).to_numpy(dtype=np.float64)
    cols.update(reference_window_features(raw, features.windows))
    columns = features.columns()
    frame = pd.DataFrame({c: cols[c][keep] for c in columns})
    label = np.array([e.is_fraud for e in events], dtype=np.int8)[keep]
    return TrainingSet(frame, label, df["event_time"].to_numpy()[keep], columns, features)


def fit(
    data: TrainingSet,
    spec: ModelSpec,
    *,
    test_fraction: float = 0.25,
    nthread: int | None = 1,
    reference_rows: int = REFERENCE_ROWS,
) -> FittedModel:
    """Fit `spec` on the earlier rows, evaluate ROC AUC on the later, held-out rows.

    One thread by default: on a small box shared with other work, XGBoost's OpenMP
    threads oversubscribe the cores (measured 0.3 s vs 11 s for the same fit).
    """
    t0 = time.perf_counter()
    names = data.columns_for(spec)
    tr, te = data.split(test_fraction)
    x = data.frame[names].to_numpy(dtype=np.float32)
    params = dict(spec.params)
    if nthread:
        params["nthread"] = nthread
    dtrain = xgb.DMatrix(x[tr], label=data.label[tr], feature_names=names)
    booster = xgb.train(params, dtrain, num_boost_round=spec.num_boost_round)
    scores = np.asarray(booster.inplace_predict(x[te], validate_features=False))
    auc = float(roc_auc_score(data.label[te], scores))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(tr, size=min(reference_rows, len(tr)), replace=False))
    reference = data.frame.iloc[sample][names].reset_index(drop=True)
    reference["score"] = np.asarray(booster.inplace_predict(x[sample], validate_features=False),
                                    dtype=np.float64)
    reference["is_fraud"] = data.label[sample].astype(bool)
    return FittedModel(spec, booster, names, auc, len(tr), len(te),
                       time.perf_counter() - t0, reference)


def log_and_register(
    model: FittedModel,
    *,
    tracking_uri: str,
    registered_name: str = REGISTERED_NAME,
    experiment: str = REGISTERED_NAME,
    extra_params: dict[str, Any] | None = None,
    artifact_location: str | None = None,
) -> Any:
    """Log `model` to MLflow (signature, example, AUC, reference sample) and register it.

    Registers a new version of `registered_name` with the spec's label as alias and
    returns its :class:`raylane.registry.ModelRef`. `artifact_location` applies when the
    experiment is created (default for sqlite URIs: ``artifacts/`` beside the database).
    """
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    from raylane.registry import REFERENCE_ARTIFACT, register

    mlflow.set_tracking_uri(tracking_uri)
    _ensure_experiment(experiment, tracking_uri, artifact_location)
    features = model.reference[model.feature_names].astype(np.float64)
    with mlflow.start_run(run_name=f"{registered_name}-{model.spec.label}") as run:
        mlflow.log_params({**model.spec.params, "num_boost_round": model.spec.num_boost_round,
                           "drop_views": ",".join(model.spec.drop_views) or "-",
                           "n_features": len(model.feature_names), **(extra_params or {})})
        mlflow.log_metrics({"auc": model.auc, "n_train": model.n_train, "n_test": model.n_test})
        signature = infer_signature(features.head(100), model.reference["score"].head(100))
        info = mlflow.xgboost.log_model(
            model.booster, name="model", signature=signature,
            input_example=features.head(5), model_format="ubj",
        )
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(REFERENCE_ARTIFACT).name
            model.reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
    return register(
        info.model_uri, registered_name, alias=model.spec.label,
        tags={"label": model.spec.label, "auc": f"{model.auc:.4f}", "run_id": run.info.run_id},
        description=model.spec.description, tracking_uri=tracking_uri,
    )


def _ensure_experiment(name: str, tracking_uri: str, artifact_location: str | None) -> None:
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///"):])
            artifact_location = (db.parent / "artifacts").resolve().as_uri()
        mlflow.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_experiment(name)


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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    world = world or World(seed, n_users=n_users, n_merchants=n_merchants)
    features = features or load_features()
    end = end or datetime.now(UTC).replace(microsecond=0)
    rate = rate or world.nominal_rate
    models: dict[str, FittedModel] = {}
    registered: dict[str, Any] = {}
    cols = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"simulating {hours:g} h of payments at {rate:g}/s", total=None)
        events = world.history(end, hours=hours, rate=rate, fraud_rate=fraud_rate)
        bar.update(task, description=f"building features for {len(events):,} events")
        data = build_dataset(events, world, features, end)
        for spec in specs:
            bar.update(task, description=f"fitting {spec.label} ({spec.description})")
            models[spec.label] = fit(data, spec, nthread=nthread)
        if log:
            from raylane.registry._mlflow import resolve_tracking_uri

            uri = resolve_tracking_uri(tracking_uri)
            extra = {"world_seed": world.seed, "n_users": world.n_users,
                     "n_merchants": world.n_merchants, "history_hours": hours, "rate": rate,
                     "fraud_rate": fraud_rate,
                     "user_interval_s": world.n_users / rate if rate else USER_PAYMENT_INTERVAL_S}
            for label, m in models.items():
                bar.update(task, description=f"logging {label} to MLflow at {uri}")
                registered[label] = log_and_register(
                    m, tracking_uri=uri, extra_params=extra, artifact_location=artifact_location
                )
    return TrainResult(models, registered, len(data.label), float(data.label.mean()),
                       time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train, print held-out AUCs, register fraud@champion and fraud@challenger."""
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: env)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--n-users", type=int, default=2000)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=None, help="events/s (default: nominal)")
    p.add_argument("--fraud-rate", type=float, default=0.02)
    p.add_argument("--no-log", action="store_true", help="fit and evaluate only")
    a = p.parse_args(argv)
    console = Console()
    res = train(seed=a.seed, n_users=a.n_users, hours=a.hours, rate=a.rate,
                fraud_rate=a.fraud_rate, log=not a.no_log, tracking_uri=a.tracking_uri)
    table = Table(title=f"fraud models ({res.n_events:,} events, {res.fraud_rate:.2%} fraud, "
                        f"{res.seconds:.1f} s)")
    for col in ("alias", "held-out ROC AUC", "columns", "fit s", "registered"):
        table.add_column(col)
    for label, m in res.models.items():
        ref = res.registered.get(label)
        table.add_row(label, f"{m.auc:.4f}", str(len(m.feature_names)), f"{m.fit_seconds:.1f}",
                      ref.uri_pinned if ref else "-")
    console.print(table)
    bad = [label for label, m in res.models.items() if m.auc < 0.9]
    if bad:
        console.print(f"[red]held-out AUC below 0.9 for {bad}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
