"""The LightGBM flavor: the native Booster, one ``Booster.predict`` per batch.

For a binary objective the Booster returns the probability of the positive class. A model
logged through LightGBM's scikit-learn wrapper (``LGBMClassifier``) is scored by its
Booster. ``lightgbm`` is imported only when such a model is loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raylane.errors import ModelError
from raylane.flavors.base import Scorer, check_columns, cpu_only, read_mlmodel, signature_columns

__all__ = ["LightGBMFlavor", "LightGBMScorer"]


class LightGBMScorer(Scorer):
    flavor = "lightgbm"
    dtype = np.float64

    def __init__(
        self, raw: Any, feature_names: list[str], device: str, nthread: int | None
    ) -> None:
        super().__init__(raw, feature_names, device)
        self._kw: dict[str, Any] = {"num_threads": nthread} if nthread else {}

    def _predict(self, x: np.ndarray) -> Any:
        return self.raw.predict(x, **self._kw)


class LightGBMFlavor:
    name = "lightgbm"

    def load(
        self, path: str, *, device: str = "cpu", nthread: int | None = None, label: str = ""
    ) -> LightGBMScorer:
        what = label or path
        try:
            import lightgbm
            import mlflow.lightgbm
        except ImportError as e:
            raise ModelError(
                f"{what} is a LightGBM model but the lightgbm package is not installed in this "
                "replica; install raylane's dependencies (`pip install -e .` installs lightgbm)",
                stage="registry",
            ) from e
        model = mlflow.lightgbm.load_model(path)
        booster = model if isinstance(model, lightgbm.Booster) else model.booster_
        names = check_columns(
            what,
            signature_columns(read_mlmodel(path)),
            booster.feature_name(),
            booster.num_feature(),
        )
        return LightGBMScorer(booster, names, cpu_only(self.name, device, what), nthread)
