"""A registered model scored in this process: a :class:`~raylane.pipeline.ports.ModelClient`
for notebooks, tests and the bench's baseline (no Ray)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from raylane.pipeline.ports import Prediction

__all__ = ["LocalModelClient"]


class LocalModelClient:
    """A model from the registry scored in this process (notebooks, tests, no Ray).

    `flavor` and `required_columns` are :func:`raylane.registry.load_model`'s: pass the
    pipeline's ``cfg.features.columns()`` to refuse a model needing a column it lacks.
    """

    def __init__(
        self,
        name: str,
        uri: str,
        *,
        flavor: str | None = None,
        required_columns: Collection[str] | None = None,
        **load_kw: Any,
    ) -> None:
        from raylane.registry.loaded import load_model

        self.name = name
        self.model = load_model(uri, flavor=flavor, required_columns=required_columns, **load_kw)

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        scores = self.model.predict(columns)
        return Prediction(
            scores=np.asarray(scores),
            model_name=self.model.name,
            model_version=str(self.model.version),
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )
