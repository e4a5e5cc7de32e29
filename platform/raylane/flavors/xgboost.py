"""The XGBoost flavor: the native Booster, one ``inplace_predict`` per batch.

The input is a float32 columnar matrix (XGBoost's own dtype, so no copy); ``device``
``cuda`` runs the prediction on the replica's GPU (inputs are copied from host memory).
A model logged through XGBoost's scikit-learn wrapper is scored by its Booster.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raylane.flavors.base import Scorer, check_columns, read_mlmodel, signature_columns

__all__ = ["XGBoostFlavor", "XGBoostScorer"]


class XGBoostScorer(Scorer):
    flavor = "xgboost"
    dtype = np.float32

    def _predict(self, x: np.ndarray) -> Any:
        return self.raw.inplace_predict(x, validate_features=False)


class XGBoostFlavor:
    name = "xgboost"

    def load(
        self, path: str, *, device: str = "cpu", nthread: int | None = None, label: str = ""
    ) -> XGBoostScorer:
        import mlflow.xgboost
        import xgboost as xgb

        booster = mlflow.xgboost.load_model(path)
        if not isinstance(booster, xgb.Booster):
            booster = booster.get_booster()
        names = check_columns(
            label or path,
            signature_columns(read_mlmodel(path)),
            booster.feature_names,
            booster.num_features(),
        )
        params: dict[str, Any] = {"device": device}
        if nthread:
            params["nthread"] = nthread
        booster.set_param(params)
        return XGBoostScorer(booster, names, device)
