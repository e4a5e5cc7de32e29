"""The general fallback: any MLflow ``python_function`` model.

It needs an MLflow signature (that is where its input columns come from); a batch goes
in as one DataFrame in signature order and must come back as one score per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raylane.flavors.base import Scorer, check_columns, cpu_only, read_mlmodel, signature_columns

__all__ = ["PyfuncFlavor", "PyfuncScorer"]


class PyfuncScorer(Scorer):
    flavor = "python_function"
    dtype = np.float64

    def _predict(self, x: np.ndarray) -> Any:
        return self.raw.predict(pd.DataFrame(x, columns=self.feature_names, copy=False))


class PyfuncFlavor:
    name = "python_function"
    #: A pyfunc model may keep reading its directory after loading (a custom model's
    #: artifacts and code paths), so :func:`raylane.registry.load_model` deletes the
    #: download only when the scorer is garbage collected, not right after loading.
    reads_lazily = True

    def load(
        self, path: str, *, device: str = "cpu", nthread: int | None = None, label: str = ""
    ) -> PyfuncScorer:
        import mlflow.pyfunc

        what = label or path
        sig = signature_columns(read_mlmodel(path))
        names = check_columns(what, sig, None, len(sig))
        model = mlflow.pyfunc.load_model(path)
        return PyfuncScorer(model, names, cpu_only(self.name, device, what))
