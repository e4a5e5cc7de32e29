"""The scikit-learn flavor: ``predict_proba(x)[:, 1]`` for a binary classifier, ``predict``
for a regressor (any estimator or Pipeline MLflow logged with ``mlflow.sklearn``).

An estimator fitted on a DataFrame checks column names at predict time; it gets one
(built over the batch matrix without a copy) in the order it was fitted with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raylane.errors import ModelError
from raylane.flavors.base import Scorer, check_columns, cpu_only, read_mlmodel, signature_columns

__all__ = ["SklearnFlavor", "SklearnScorer"]


class SklearnScorer(Scorer):
    flavor = "sklearn"
    dtype = np.float64

    def __init__(
        self, raw: Any, feature_names: list[str], device: str, *, proba: bool, named: bool
    ) -> None:
        super().__init__(raw, feature_names, device)
        self.proba = proba
        self.named = named  # fitted on a DataFrame: give it one

    def _predict(self, x: np.ndarray) -> Any:
        data: Any = pd.DataFrame(x, columns=self.feature_names, copy=False) if self.named else x
        if self.proba:
            return self.raw.predict_proba(data)[:, 1]
        return self.raw.predict(data)


class SklearnFlavor:
    name = "sklearn"

    def load(
        self, path: str, *, device: str = "cpu", nthread: int | None = None, label: str = ""
    ) -> SklearnScorer:
        import mlflow.sklearn
        from sklearn.base import is_classifier

        what = label or path
        model = mlflow.sklearn.load_model(path)
        sig = signature_columns(read_mlmodel(path))
        fitted = getattr(model, "feature_names_in_", None)
        if fitted is not None:
            fitted = [str(c) for c in fitted]
            if sig and set(sig) != set(fitted):
                raise ModelError(
                    f"{what}: its signature lists columns {sig} but the estimator was fitted "
                    f"on {fitted}; log it again with signature=infer_signature(X, y) of the "
                    "training frame",
                    stage="registry",
                )
            names = fitted  # the order the estimator checks
        else:
            n_in = getattr(model, "n_features_in_", len(sig))
            names = check_columns(what, sig, None, int(n_in))
        proba = bool(is_classifier(model)) and hasattr(model, "predict_proba")
        if proba:
            classes = list(getattr(model, "classes_", []))
            if len(classes) != 2:
                raise ModelError(
                    f"{what} is a classifier with {len(classes)} classes {classes}; raylane "
                    "scores the probability of the positive class of a binary classifier",
                    stage="registry",
                )
        return SklearnScorer(
            model,
            names,
            cpu_only(self.name, device, what),
            proba=proba,
            named=fitted is not None,
        )
