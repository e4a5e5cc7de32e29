"""Training helpers for a use case's ``models/<name>/train.py``: fit, evaluate, log, register.

The contract a use case's training fulfils, whatever the model flavor, so that `serve run`
can load and monitor what it registers:

1. **Columns.** A :class:`TrainingSet` holds the feature columns in the order the serve
   config's ``FeaturesConfig.columns()`` gives, computed the way serving computes them:
   :func:`training_set` builds one from raw events with the platform's own code (event
   fields, categorical encodings, window aggregates replayed in event-time order, derived
   columns), so training and serving never disagree on a value.
2. **Fit.** A spec per model (:class:`ModelSpec` / :data:`XGBoostSpec` for XGBoost,
   :class:`SklearnSpec` for any scikit-learn binary classifier; one class per flavor, each
   with its own ``fit``) is fitted on the earlier rows and evaluated (ROC AUC) on the later,
   held-out ones. Fitting never touches MLflow, so tests train without it.
3. **Signature.** The model is logged in its own MLflow flavor with a signature whose
   inputs are its columns in order (``infer_signature``): serving stacks exactly these
   columns and refuses a model that needs one the pipeline does not produce.
4. **Reference sample.** A sample of training rows (the model's columns, then every other
   training-set column the model leaves out, ``score`` and ``label``) is logged as the run
   artifact ``reference/reference.parquet``: the drift monitor compares live windows with it,
   on its configured columns whether or not this model reads them.
5. **Registration and aliases.** :func:`log_and_register` registers a new version of the
   model name the config's URIs use and points the spec's label (``champion``,
   ``challenger``) at it, which is what ``models:/<name>@champion`` resolves to.

scikit-learn with MLflow 3.17: the skops format refuses to save (and load) types outside
skops' trusted list, e.g. ``HistGradientBoostingClassifier``'s ``TreePredictor`` ("The saved
sklearn model references untrusted types"); :meth:`FittedSklearnModel.log_model` passes
``skops_trusted_types`` computed from the estimator it has just fitted.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from raylane.config import EventTimeConfig, FeaturesConfig

__all__ = [
    "BASE_PARAMS",
    "REFERENCE_ROWS",
    "Fitted",
    "FittedModel",
    "FittedSklearnModel",
    "ModelSpec",
    "SklearnSpec",
    "Spec",
    "TrainResult",
    "TrainingSet",
    "XGBoostSpec",
    "fit",
    "fit_and_register",
    "fit_any",
    "fit_sklearn",
    "log_and_register",
    "print_results",
    "simulate_fit_register",
    "training_set",
]

REFERENCE_ROWS = 5000
BASE_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eval_metric": "auc",
    "seed": 0,
}


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: XGBoost params, rounds, and which views / columns to leave out."""

    label: str
    params: dict[str, Any]
    num_boost_round: int
    drop_views: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    description: str = ""

    def fit(self, data: TrainingSet, *, nthread: int | None = 1) -> FittedModel:
        return fit(data, self, nthread=nthread)


#: The XGBoost spec under its flavor's name.
XGBoostSpec = ModelSpec


@dataclass(frozen=True)
class SklearnSpec:
    """What to fit with scikit-learn: a factory of the unfitted binary classifier, and which
    views / columns to leave out (e.g. ``lambda: HistGradientBoostingClassifier()``)."""

    label: str
    make: Callable[[], Any]
    drop_views: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    description: str = ""

    def fit(self, data: TrainingSet, *, nthread: int | None = 1) -> FittedSklearnModel:
        return fit_sklearn(data, self)


class Spec(Protocol):
    """What every model spec has: a label (its alias), what it leaves out, and ``fit``.

    A new flavor is one spec class whose ``fit`` returns a :class:`Fitted`."""

    @property
    def label(self) -> str: ...
    @property
    def drop_views(self) -> tuple[str, ...]: ...
    @property
    def drop_columns(self) -> tuple[str, ...]: ...
    @property
    def description(self) -> str: ...

    def fit(self, data: TrainingSet, *, nthread: int | None = 1) -> Fitted: ...


class Fitted(Protocol):
    """A fitted model of any flavor: what :func:`log_and_register` and reports need."""

    @property
    def spec(self) -> Spec: ...
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def auc(self) -> float: ...
    @property
    def n_train(self) -> int: ...
    @property
    def n_test(self) -> int: ...
    @property
    def fit_seconds(self) -> float: ...
    @property
    def reference(self) -> pd.DataFrame: ...

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...
    def params(self) -> dict[str, Any]: ...
    def log_model(self, *, signature: Any, input_example: pd.DataFrame) -> Any: ...


@dataclass(frozen=True)
class TrainingSet:
    """Feature columns (config order), labels and event times of the training rows."""

    frame: pd.DataFrame
    label: np.ndarray
    event_time: np.ndarray
    columns: list[str]
    features: FeaturesConfig

    def columns_for(self, spec: Spec) -> list[str]:
        dropped = set(spec.drop_columns)
        dropped |= {
            c for v in self.features.online if v.view in spec.drop_views for c in v.columns()
        }
        return [c for c in self.columns if c not in dropped]

    def split(self, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of a time-based split: the last `test_fraction` is held out."""
        order = np.argsort(self.event_time, kind="stable")
        cut = int(len(order) * (1.0 - test_fraction))
        return order[:cut], order[cut:]


def training_set(
    events: Sequence[Mapping[str, Any]],
    labels: Sequence[int] | np.ndarray,
    features: FeaturesConfig,
    *,
    event_time: EventTimeConfig | None = None,
    online: Mapping[str, pd.DataFrame] | None = None,
    online_columns: Mapping[str, np.ndarray] | None = None,
    warmup_s: float | None = None,
) -> TrainingSet:
    """The training rows of `events` (in arrival order), computed by serving's own code.

    Event fields, categorical encodings (:func:`raylane.features.categorical_columns`),
    online features looked up in `online` (view name -> a DataFrame indexed by the view's
    join key, holding the view's features: the values the offline source holds; a key it
    lacks is missing, as in serving) or given as columns in `online_columns` (column ->
    values in the events' order, e.g. Feast's point-in-time join from
    :func:`raylane.features.historical.historical_online_columns`), window aggregates
    replayed in order
    (:func:`raylane.features.reference_window_features`, the Redis script's reference) and
    derived columns. Rows in the first `warmup_s` (default: the longest window, at most half
    the events' time span) are left out: their windows are not yet full.
    """
    from raylane.features import categorical_columns, reference_window_features
    from raylane.features.derived import compute_derived
    from raylane.pipeline.enrich import event_column

    et = event_time or EventTimeConfig()
    evs = [dict(e) for e in events]
    y = np.asarray(labels, dtype=np.int8)
    if len(y) != len(evs):
        raise ValueError(f"{len(evs)} events but {len(y)} labels")
    cols: dict[str, np.ndarray] = {f: event_column(evs, f) for f in features.event}
    cols.update(categorical_columns(evs, features.categorical))
    for v in features.online:
        if online_columns is not None and all(c in online_columns for c in v.columns()):
            for col in v.columns():
                cols[col] = np.asarray(online_columns[col], dtype=np.float64)
            continue
        if online is None or v.view not in online:
            raise ValueError(
                f"features.online reads view {v.view!r}; pass its rows as online[{v.view!r}] "
                "(a DataFrame indexed by the join key)"
            )
        rows = online[v.view].reindex([str(ev.get(v.entity_field)) for ev in evs])
        for f, col in zip(v.features, v.columns(), strict=True):
            cols[col] = rows[f].to_numpy(dtype=np.float64)
    if features.windows:
        cols.update(reference_window_features(evs, features.windows, et))
    if features.derived:
        compute_derived(cols, features.derived)
    t = np.fromiter((et.ms(ev) for ev in evs), dtype=np.int64, count=len(evs))
    t0 = int(t.min()) if len(t) else 0
    if warmup_s is None:
        span_s = (int(t.max()) - t0) / 1000.0 if len(t) else 0.0
        warmup_s = min(max((w.window_s for w in features.windows), default=0.0), span_s / 2)
    keep = t >= t0 + int(warmup_s * 1000)
    columns = features.columns()
    frame = pd.DataFrame({c: cols[c][keep] for c in columns})
    return TrainingSet(frame, y[keep], t[keep], columns, features)


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

    def params(self) -> dict[str, Any]:
        return {**self.spec.params, "num_boost_round": self.spec.num_boost_round}

    def log_model(self, *, signature: Any, input_example: pd.DataFrame) -> Any:
        """Log the booster with MLflow's xgboost flavor; returns MLflow's ModelInfo."""
        import mlflow.xgboost

        return mlflow.xgboost.log_model(
            self.booster,
            name="model",
            signature=signature,
            input_example=input_example,
            model_format="ubj",
            pip_requirements=_requirements("xgboost"),
        )


@dataclass(frozen=True)
class FittedSklearnModel:
    """A fitted scikit-learn binary classifier, its columns and its held-out evaluation.

    It was fitted on a DataFrame of its columns (float64), so it knows their names and
    order (``feature_names_in_``); its score is ``predict_proba(X)[:, 1]``.
    """

    spec: SklearnSpec
    estimator: Any
    feature_names: list[str]
    auc: float
    n_train: int
    n_test: int
    fit_seconds: float
    reference: pd.DataFrame = field(repr=False)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.feature_names].astype(np.float64)
        return np.asarray(self.estimator.predict_proba(x)[:, 1], dtype=np.float64)

    def params(self) -> dict[str, Any]:
        scalar = (bool, int, float, str, type(None))
        p = {k: v for k, v in self.estimator.get_params().items() if isinstance(v, scalar)}
        return {"estimator": type(self.estimator).__name__, **p}

    def skops_trusted_types(self) -> list[str]:
        """The types of this estimator that skops does not trust by default.

        MLflow 3.17 saves scikit-learn models in the skops format (no pickle) and, when it
        saves one, loads it straight back with ``skops_trusted_types``: a type outside
        skops' default allow-list makes ``log_model`` fail ("The saved sklearn model
        references untrusted types"). HistGradientBoostingClassifier is one such model
        (its ``TreePredictor`` holds raw node indices). The list is computed from the
        estimator just fitted here, in this process, so trusting it trusts only our own
        object; MLflow records it in the MLmodel file, where ``mlflow.sklearn.load_model``
        (and so raylane's sklearn flavor) reads it back.
        """
        import skops.io

        return list(skops.io.get_untrusted_types(data=skops.io.dumps(self.estimator)))

    def log_model(self, *, signature: Any, input_example: pd.DataFrame) -> Any:
        """Log the estimator with MLflow's sklearn flavor (skops format); returns ModelInfo."""
        import mlflow.sklearn

        return mlflow.sklearn.log_model(
            self.estimator,
            name="model",
            signature=signature,
            input_example=input_example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=self.skops_trusted_types() or None,
            pip_requirements=_requirements("scikit-learn", "skops"),
        )


def _requirements(*dists: str) -> list[str]:
    """The model's pip requirements, pinned to what trained it.

    Given explicitly, MLflow does not infer them, which it does by loading the model again
    in a subprocess (seconds per model on a small machine)."""
    from importlib.metadata import version

    return [f"{d}=={version(d)}" for d in ("mlflow", *dists)]


@dataclass(frozen=True)
class TrainResult:
    """Fitted models by label, their registry references (if logged) and timings."""

    models: dict[str, Fitted]
    registered: dict[str, Any]
    n_events: int
    positive_rate: float
    seconds: float

    @property
    def champion(self) -> Fitted:
        return self.models["champion"]

    @property
    def challenger(self) -> Fitted:
        return self.models["challenger"]

    @property
    def fraud_rate(self) -> float:
        """Share of positive rows (fraud, or churners for churn)."""
        return self.positive_rate


def _reference_columns(data: TrainingSet, names: list[str]) -> list[str]:
    """The model's columns in order, then the training set's columns it leaves out.

    The drift monitor watches the pipeline's stream (``drift.columns``, default every feature
    column), not only what one model reads: a model trained without a column (a skewed one
    notebook 01 drops) must still let the monitor compare that column after its promotion.
    """
    return [*names, *(c for c in data.columns if c not in set(names))]


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
    reference = data.frame.iloc[sample][_reference_columns(data, names)].reset_index(drop=True)
    reference["score"] = np.asarray(
        booster.inplace_predict(x[sample], validate_features=False), dtype=np.float64
    )
    reference["label"] = data.label[sample].astype(bool)
    return FittedModel(
        spec, booster, names, auc, len(tr), len(te), time.perf_counter() - t0, reference
    )


def fit_sklearn(
    data: TrainingSet,
    spec: SklearnSpec,
    *,
    test_fraction: float = 0.25,
    reference_rows: int = REFERENCE_ROWS,
) -> FittedSklearnModel:
    """Fit `spec`'s classifier on the earlier rows, evaluate ROC AUC on the later ones.

    The same split and reference sample as :func:`fit` (so the drift monitor compares the
    same kind of window), with the classifier's ``predict_proba[:, 1]`` as the score.
    """
    t0 = time.perf_counter()
    names = data.columns_for(spec)
    tr, te = data.split(test_fraction)
    frame = data.frame[names].astype(np.float64)
    est = spec.make()
    est.fit(frame.iloc[tr], data.label[tr])
    if list(getattr(est, "classes_", [])) != [0, 1]:
        raise ValueError(
            f"{spec.label}: {type(est).__name__} learned classes "
            f"{list(getattr(est, 'classes_', []))}; raylane scores binary classifiers (0/1)"
        )
    scores = est.predict_proba(frame.iloc[te])[:, 1]
    auc = float(roc_auc_score(data.label[te], scores))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(tr, size=min(reference_rows, len(tr)), replace=False))
    reference = data.frame.iloc[sample][_reference_columns(data, names)].reset_index(drop=True)
    reference["score"] = np.asarray(est.predict_proba(frame.iloc[sample])[:, 1], dtype=np.float64)
    reference["label"] = data.label[sample].astype(bool)
    return FittedSklearnModel(
        spec, est, names, auc, len(tr), len(te), time.perf_counter() - t0, reference
    )


def fit_any(data: TrainingSet, spec: Spec, *, nthread: int | None = 1) -> Fitted:
    """Fit `spec` with its own flavor (the spec's ``fit``)."""
    return spec.fit(data, nthread=nthread)


def log_and_register(
    model: Fitted,
    *,
    registered_name: str,
    tracking_uri: str,
    experiment: str | None = None,
    extra_params: dict[str, Any] | None = None,
    artifact_location: str | None = None,
) -> Any:
    """Log `model` to MLflow (signature, example, AUC, reference sample) and register it.

    The model is logged in its own flavor (xgboost or sklearn, see ``log_model``).
    Registers a new version of `registered_name` with the spec's label as alias and
    returns its :class:`raylane.registry.ModelRef`. `artifact_location` applies when the
    experiment is created (default for sqlite URIs: ``artifacts/`` beside the database).
    """
    import mlflow
    from mlflow.models import infer_signature

    from raylane.registry import REFERENCE_ARTIFACT, register

    features = model.reference[model.feature_names].astype(np.float64)
    with _tracking(tracking_uri):
        _ensure_experiment(experiment or registered_name, tracking_uri, artifact_location)
        with mlflow.start_run(run_name=f"{registered_name}-{model.spec.label}") as run:
            mlflow.log_params(
                {
                    **model.params(),
                    "dropped": ",".join(model.spec.drop_views + model.spec.drop_columns) or "-",
                    "n_features": len(model.feature_names),
                    **(extra_params or {}),
                }
            )
            mlflow.log_metrics({"auc": model.auc, "n_train": model.n_train, "n_test": model.n_test})
            signature = infer_signature(features.head(100), model.reference["score"].head(100))
            info = model.log_model(signature=signature, input_example=features.head(5))
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / Path(REFERENCE_ARTIFACT).name
                model.reference.to_parquet(path, index=False)
                mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        # inside the block: MLflow resolves the logged model's models:/m-<id> source through
        # the process-wide tracking URI, whatever the client it registers with
        return register(
            info.model_uri,
            registered_name,
            alias=model.spec.label,
            tags={"label": model.spec.label, "auc": f"{model.auc:.4f}", "run_id": run.info.run_id},
            description=model.spec.description,
            tracking_uri=tracking_uri,
        )


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API (start_run, log_*) on `uri` for the block only.

    ``mlflow.set_tracking_uri`` also sets the MLFLOW_TRACKING_URI environment variable
    "so that subprocesses inherit it": left set, a notebook or test that trains against a
    scratch sqlite store would send every later Ray replica it starts to that store.
    Both are restored on exit.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None: back to MLflow's default, the variable unset
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]


def _ensure_experiment(name: str, tracking_uri: str, artifact_location: str | None) -> None:
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///") :])
            artifact_location = (db.parent / "artifacts").resolve().as_uri()
        mlflow.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_experiment(name)


def fit_and_register(
    data: TrainingSet,
    specs: Sequence[Spec],
    *,
    registered_name: str,
    log: bool,
    tracking_uri: str | None,
    artifact_location: str | None = None,
    extra_params: dict[str, Any] | None = None,
    nthread: int | None = 1,
    status: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Fitted], dict[str, Any]]:
    """Fit every spec; when `log`, log and register each under `registered_name`."""
    models: dict[str, Fitted] = {}
    registered: dict[str, Any] = {}
    for spec in specs:
        status(f"fitting {spec.label} ({spec.description})")
        models[spec.label] = fit_any(data, spec, nthread=nthread)
    if log:
        from raylane.registry._mlflow import resolve_tracking_uri

        uri = resolve_tracking_uri(tracking_uri)
        for label, m in models.items():
            status(f"logging {registered_name}@{label} to MLflow at {uri}")
            registered[label] = log_and_register(
                m,
                registered_name=registered_name,
                tracking_uri=uri,
                extra_params=extra_params,
                artifact_location=artifact_location,
            )
    return models, registered


def print_results(res: TrainResult, title: str, min_auc: dict[str, float] | None = None) -> int:
    """Print a table of held-out AUCs; exit status 1 when one is below its minimum.

    `min_auc` maps labels to minimums; by default every model needs 0.9.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"{title} ({res.n_events:,} rows, {res.positive_rate:.2%} positive, "
        f"{res.seconds:.1f} s)"
    )
    for col in ("alias", "held-out ROC AUC", "columns", "fit s", "registered"):
        table.add_column(col)
    for label, m in res.models.items():
        ref = res.registered.get(label)
        table.add_row(
            label,
            f"{m.auc:.4f}",
            str(len(m.feature_names)),
            f"{m.fit_seconds:.1f}",
            ref.uri_pinned if ref else "-",
        )
    console.print(table)
    floor = min_auc if min_auc is not None else {label: 0.9 for label in res.models}
    bad = [label for label, m in res.models.items() if m.auc < floor.get(label, 0.0)]
    if bad:
        console.print(f"[red]held-out AUC below {floor} for {bad}[/red]")
        return 1
    return 0


def simulate_fit_register(
    what: str,
    simulate: Callable[[], Sequence[Any]],
    build: Callable[[Sequence[Any]], TrainingSet],
    specs: Sequence[Spec],
    *,
    registered_name: str,
    extra_params: dict[str, Any],
    log: bool,
    tracking_uri: str | None,
    artifact_location: str | None = None,
    nthread: int | None = 1,
    progress: bool = True,
) -> TrainResult:
    """Simulate events, build the training set, fit (and log + register) every spec (spinner)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    cols = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"simulating {what}", total=None)
        events = simulate()
        bar.update(task, description=f"building features for {len(events):,} events")
        data = build(events)
        models, registered = fit_and_register(
            data,
            specs,
            registered_name=registered_name,
            log=log,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location,
            extra_params=extra_params,
            nthread=nthread,
            status=lambda text: bar.update(task, description=text),
        )
    return TrainResult(
        models, registered, len(data.label), float(data.label.mean()), time.perf_counter() - t0
    )
