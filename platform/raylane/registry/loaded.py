"""Load a registered model for serving, whatever its MLflow flavor, and score columnar batches.

:func:`load_model` resolves the URI to one version, downloads it once, picks the flavor
(the config's ``flavor:``, else the model's own, see :mod:`raylane.flavors`) and returns a
:class:`LoadedModel` whose ``predict`` stacks the model's own columns into one matrix and
makes one library call per batch. A model that needs a column the pipeline does not
produce is refused at load (and at score time), never scored on NaN-filled columns.

Downloads go to a temporary directory that does not outlive its use: it is deleted once the
model is in memory (the native XGBoost and LightGBM boosters and scikit-learn estimators
are read whole), or, for a flavor that may keep reading its files (``python_function``: a
custom model's artifacts and code stay on disk) and for a model logged with ``code_paths``,
when the loaded scorer is garbage collected, e.g. after a hot swap replaced it. The
reference sample is read into a DataFrame and its download deleted at once.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from raylane.errors import ModelError, RaylaneError
from raylane.flavors import Scorer, model_flavors, pick_flavor, read_mlmodel, require_columns
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
    scorer: Scorer = field(repr=False)
    alias: str | None = None
    ref: ModelRef | None = field(default=None, repr=False)
    #: the serve config whose features feed it (named when a column is missing)
    config: str = ""

    @property
    def feature_names(self) -> list[str]:
        return self.scorer.feature_names

    @property
    def device(self) -> str:
        return self.scorer.device

    @property
    def flavor(self) -> str:
        return self.scorer.flavor

    @property
    def label(self) -> str:
        return f"model {self.name} v{self.version}"

    def stack(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The model's input matrix: its columns in order, in the flavor's dtype.

        Raises MissingColumnsError when `columns` lacks one of them.
        """
        require_columns(self.label, self.feature_names, columns.keys(), self.config)
        n = _length(columns)
        x = np.empty((n, len(self.feature_names)), dtype=self.scorer.dtype)
        for j, name in enumerate(self.feature_names):
            x[:, j] = columns[name]
        return x

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Scores for a batch given as column name -> 1-d array (one model call)."""
        return self.predict_matrix(self.stack(columns))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores for an input matrix built by :meth:`stack` (one model call)."""
        return self.scorer.predict_matrix(x)

    def missing_columns(self, columns: Collection[str] | Mapping[str, Any]) -> list[str]:
        """The model's columns that `columns` lacks (it refuses to score without them)."""
        return [c for c in self.feature_names if c not in columns]


def _length(columns: Mapping[str, Any]) -> int:
    for col in columns.values():
        return len(col)
    raise ValueError("predict needs at least one column to know the batch size")


def load_model(
    uri: str,
    *,
    device: Literal["cpu", "cuda"] | str = "cpu",
    flavor: str | None = None,
    required_columns: Collection[str] | None = None,
    config: str = "",
    nthread: int | None = None,
    tracking_uri: str | None = None,
) -> LoadedModel:
    """Resolve `uri` (``models:/name@alias`` or ``models:/name/version``) and load it.

    `device`: ``cpu``, ``cuda`` or ``cuda:<n>`` (XGBoost scores there; CPU-only flavors say
    so and use the CPU). `flavor`: the loader to use (a key of
    :data:`raylane.flavors.FLAVORS`); None picks from the model's own flavors.
    `required_columns`: the columns the pipeline produces (``FeaturesConfig.columns()``);
    every input column of the model must be one of them, or loading fails with a
    MissingColumnsError naming the columns, the model and `config` (the serve config file
    to fix). None skips the check (notebooks, scoring a frame of the model's own columns).
    """
    import mlflow.artifacts

    tu = resolve_tracking_uri(tracking_uri)
    ref = resolve(uri, tracking_uri=tu)
    label = f"model {ref.name} v{ref.version}"
    tmp = tempfile.mkdtemp(prefix=f"raylane-{ref.name}-{ref.version}-")
    try:
        with boundary(f"loading {ref.uri_pinned}", tu, name=ref.name):
            # Download the version's own source: MLflow's models:/ resolution ignores the
            # registry_uri argument and falls back to the process default (a local sqlite).
            source = client(tu).get_model_version_download_uri(ref.name, str(ref.version))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, tracking_uri=tu, dst_path=tmp
            )
        flavors = _flavors(local, label, ref)
        loader = pick_flavor(flavors, flavor, label=f"model {ref.name} version {ref.version}")
        try:
            scorer = loader.load(local, device=device, nthread=nthread, label=label)
        except RaylaneError:
            raise
        except Exception as e:  # the library's own error, wrapped once here
            raise ModelError(
                f"{label} ({ref.uri_pinned}) could not be loaded with the {loader.name} flavor "
                f"({_first_line(e)}); it has flavors [{', '.join(flavors)}]: set `flavor:` in "
                "the model config to another of them, or log the model again",
                stage="registry",
            ) from e
    except BaseException:
        _remove(tmp)
        raise
    if getattr(loader, "reads_lazily", False) or _ships_code(local):
        weakref.finalize(scorer, _remove, tmp)  # its files stay while the scorer lives
    else:
        _remove(tmp)
    if required_columns is not None:
        require_columns(label, scorer.feature_names, required_columns, config)
    return LoadedModel(ref.name, ref.version, ref.uri_pinned, scorer, ref.alias, ref, config)


def _flavors(local: str, label: str, ref: ModelRef) -> list[str]:
    try:
        return model_flavors(local)
    except Exception as e:
        raise ModelError(
            f"{label} ({ref.uri_pinned}) has no readable MLmodel file ({_first_line(e)}); "
            "register a model logged with mlflow.<flavor>.log_model",
            stage="registry",
        ) from e


def _ships_code(local: str) -> bool:
    """Whether the model was logged with ``code_paths``: MLflow puts that code folder of the
    download on sys.path, and a module the model imports lazily is read from it later."""
    try:
        return any(conf.get("code") for conf in read_mlmodel(local).flavors.values())
    except Exception:  # unreadable here means it loaded without: nothing to keep
        return False


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


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
        tmp = tempfile.mkdtemp(prefix="raylane-ref-")
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=tu, dst_path=tmp
            )
            return pd.read_parquet(Path(path))
        finally:
            _remove(tmp)


def _remove(path: str) -> None:
    """Delete a download directory (best effort: a leftover is not worth failing a load)."""
    shutil.rmtree(path, ignore_errors=True)
