"""What every model flavor provides: a loader, and the scorer it returns.

A :class:`Flavor` loads a downloaded MLflow model directory into a :class:`Scorer`: the
model's input columns in order (``feature_names``), the dtype its input matrix should
have, the device it runs on, and ``predict_matrix(x) -> 1-d scores`` (one library call
per batch). :func:`require_columns` is the check that a model's columns are all produced
by the pipeline: a model is refused, never fed missing values it was not trained on.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from raylane.errors import ModelError

__all__ = [
    "Flavor",
    "MissingColumnsError",
    "Scorer",
    "as_scores",
    "check_columns",
    "cpu_only",
    "read_mlmodel",
    "require_columns",
    "signature_columns",
]

log = logging.getLogger("raylane.flavors")

#: Where the columns a pipeline produces are declared (named in refusal messages).
FEATURE_SECTIONS = "features (event / online / windows / derived)"


class MissingColumnsError(ModelError):
    """A model needs input columns the pipeline does not produce (refused, never NaN-filled)."""

    default_stage = "registry"


class Scorer(ABC):
    """One loaded model: its input columns and one library call per batch."""

    #: the flavor that loaded it (a key of :data:`raylane.flavors.FLAVORS`)
    flavor: ClassVar[str]
    #: dtype of the input matrix :meth:`predict_matrix` expects
    dtype: ClassVar[type[np.floating[Any]]] = np.float64

    def __init__(self, raw: Any, feature_names: Sequence[str], device: str = "cpu") -> None:
        self.raw = raw  # the library's own model object (Booster, estimator, PyFuncModel)
        self.feature_names = list(feature_names)
        self.device = device

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores (1-d) for `x`: one row per event, columns in ``feature_names`` order."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return as_scores(self._predict(x), x.shape[0], self.flavor)

    @abstractmethod
    def _predict(self, x: np.ndarray) -> Any: ...


class Flavor(Protocol):
    """Loads one MLflow flavor. A new flavor is one file with one of these, plus one line
    in :data:`raylane.flavors.FLAVORS`."""

    name: str

    def load(
        self, path: str, *, device: str = "cpu", nthread: int | None = None, label: str = ""
    ) -> Scorer:
        """Load the MLflow model directory at `path` (already downloaded).

        `device` is ``cpu``, ``cuda`` or ``cuda:<n>`` (flavors without GPU support score
        on the CPU and say so); `label` names the model in error messages.
        """
        ...


def read_mlmodel(path: str) -> Any:
    """The ``MLmodel`` metadata (:class:`mlflow.models.Model`) of a model directory."""
    from mlflow.models import Model

    return Model.load(path)


def signature_columns(meta: Any) -> list[str]:
    """Input column names of the model's MLflow signature, in order ([] when it has none)."""
    sig = getattr(meta, "signature", None)
    if sig is None or sig.inputs is None:
        return []
    return [str(n) for n in sig.inputs.input_names()]


def check_columns(
    label: str,
    signature: Sequence[str],
    model_names: Sequence[str] | None,
    n_model_inputs: int,
) -> list[str]:
    """The model's input columns: the signature's, else the model's own names.

    Raises ModelError when neither names them or they disagree in number with what the
    model expects.
    """
    names = list(signature) or list(model_names or [])
    if not names:
        raise ModelError(
            f"{label} has neither an MLflow signature nor feature names of its own, so its "
            "input columns are unknown; log it with signature=infer_signature(X, y)",
            stage="registry",
        )
    if n_model_inputs != len(names):
        raise ModelError(
            f"{label}: its signature lists {len(names)} columns but the model expects "
            f"{n_model_inputs}; log it again with a matching signature",
            stage="registry",
        )
    return names


def require_columns(
    label: str, feature_names: Sequence[str], produced: Collection[str], config: str = ""
) -> None:
    """Refuse a model whose input columns are not all in `produced` (the pipeline's columns).

    `label` names the model (``model fraud v3``), `config` the serve config to fix.
    """
    have = set(produced)
    missing = [c for c in feature_names if c not in have]
    if not missing:
        return
    cols = ", ".join(repr(c) for c in missing)
    noun = "column" if len(missing) == 1 else "columns"
    where = f" in {config}" if config else " in the pipeline's serve config"
    raise MissingColumnsError(
        f"{label} needs {noun} {cols}, which the pipeline does not produce; add "
        f"{'it' if len(missing) == 1 else 'them'} under {FEATURE_SECTIONS}{where}, or "
        "retrain the model without "
        f"{'it' if len(missing) == 1 else 'them'}",
        stage="registry",
    )


def as_scores(out: Any, n: int, flavor: str) -> np.ndarray:
    """A library's prediction output as a 1-d float64 array of `n` scores."""
    if hasattr(out, "to_numpy"):  # pandas Series / DataFrame
        out = out.to_numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ModelError(
            f"a {flavor} model returned predictions of shape {arr.shape} for {n} rows; raylane "
            "scores one number per event: log a binary classifier or a regressor (a pyfunc "
            "model must return one score per row, e.g. predict_proba(x)[:, 1])",
            stage="score",
        )
    return arr


def cpu_only(flavor: str, device: str, label: str) -> str:
    """The device a CPU-only flavor runs on; says so when a GPU was asked for."""
    if device != "cpu":
        log.warning("%s: the %s flavor scores on the CPU (asked for %s)", label, flavor, device)
    return "cpu"
