"""Load a registered XGBoost model for serving and score columnar batches with it.

:func:`load_model` resolves the URI to one version, downloads it once, reads the input
column order from its MLflow signature and returns a :class:`LoadedModel` whose
``predict`` stacks the model's own columns into one float32 array and makes a single
``Booster.inplace_predict`` call per batch (missing columns become NaN, which XGBoost
treats as missing values).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost as xgb

from raylane.errors import ModelError
from raylane.registry._mlflow import boundary, client, resolve_tracking_uri
from raylane.registry.refs import ModelRef, resolve

__all__ = ["REFERENCE_ARTIFACT", "LoadedModel", "load_model", "load_reference"]

#: Run artifact holding a sample of training features plus a ``score`` column.
REFERENCE_ARTIFACT = "reference/reference.parquet"


@dataclass
class LoadedModel:
    """One registered model version in memory, ready to score columnar batches."""

    name: str
    version: int
    uri: str
    booster: xgb.Booster
    feature_names: list[str]
    alias: str | None = None
    device: str = "cpu"
    ref: ModelRef | None = field(default=None, repr=False)

    def stack(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The model's input matrix: its columns in order, float32, NaN where missing."""
        n = _length(columns)
        x = np.full((n, len(self.feature_names)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.feature_names):
            col = columns.get(name)
            if col is not None:
                x[:, j] = col
        return x

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Scores for a batch given as column name -> 1-d array (one inplace_predict call)."""
        return self.predict_matrix(self.stack(columns))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores for an input matrix built by :meth:`stack` (one inplace_predict call)."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        out = self.booster.inplace_predict(x, validate_features=False)
        return np.asarray(out)

    def missing_columns(self, columns: Mapping[str, Any]) -> list[str]:
        """The model's columns that `columns` lacks (they would be scored as missing)."""
        return [c for c in self.feature_names if c not in columns]


def _length(columns: Mapping[str, Any]) -> int:
    for col in columns.values():
        return len(col)
    raise ValueError("predict needs at least one column to know the batch size")


def load_model(
    uri: str,
    *,
    device: Literal["cpu", "cuda"] | str = "cpu",
    nthread: int | None = None,
    tracking_uri: str | None = None,
) -> LoadedModel:
    """Resolve `uri` (``models:/name@alias`` or ``models:/name/version``) and load it.

    `device` sets the booster's ``device`` parameter (``cpu``, ``cuda`` or ``cuda:<n>``).
    """
    import mlflow.artifacts
    import mlflow.xgboost
    from mlflow.models import Model

    tu = resolve_tracking_uri(tracking_uri)
    ref = resolve(uri, tracking_uri=tu)
    with boundary(f"loading {ref.uri_pinned}", tu, name=ref.name):
        # Download the version's own source: MLflow's models:/ resolution ignores the
        # registry_uri argument and falls back to the process default (a local sqlite file).
        source = client(tu).get_model_version_download_uri(ref.name, str(ref.version))
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source,
            tracking_uri=tu,
            dst_path=tempfile.mkdtemp(prefix=f"raylane-{ref.name}-{ref.version}-"),
        )
        meta = Model.load(local)
        booster = mlflow.xgboost.load_model(local)
    if not isinstance(booster, xgb.Booster):
        booster = booster.get_booster()
    names = _feature_names(meta, booster, ref)
    params: dict[str, Any] = {"device": device}
    if nthread:
        params["nthread"] = nthread
    booster.set_param(params)
    return LoadedModel(
        ref.name, ref.version, ref.uri_pinned, booster, names, ref.alias, device, ref
    )


def _feature_names(meta: Any, booster: xgb.Booster, ref: ModelRef) -> list[str]:
    sig = meta.signature
    names = list(sig.inputs.input_names()) if sig is not None and sig.inputs else []
    if not names:
        names = list(booster.feature_names or [])
    if not names:
        raise ModelError(
            f"model {ref.uri_pinned} has neither a signature nor booster feature names, so its "
            "input columns are unknown; log it with signature=infer_signature(X, y)",
            stage="registry",
        )
    if booster.num_features() != len(names):
        raise ModelError(
            f"model {ref.uri_pinned}: signature lists {len(names)} columns but the booster "
            f"expects {booster.num_features()}; re-log it with a matching signature",
            stage="registry",
        )
    return names


def load_reference(uri: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """The reference sample (training features + ``score``) logged with a model version."""
    import mlflow.artifacts

    tu = resolve_tracking_uri(tracking_uri)
    ref = resolve(uri, tracking_uri=tu)
    with boundary(f"loading the reference data of {ref.uri_pinned}", tu, name=ref.name):
        run_id = ref.run_id or client(tu).get_model_version(ref.name, str(ref.version)).run_id
        if not run_id:
            raise ModelError(
                f"model {ref.uri_pinned} has no run, so no {REFERENCE_ARTIFACT}; register "
                "versions logged by models/<name>/train.py",
                stage="registry",
            )
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=REFERENCE_ARTIFACT,
            tracking_uri=tu,
            dst_path=tempfile.mkdtemp(prefix="raylane-ref-"),
        )
    return pd.read_parquet(Path(path))
