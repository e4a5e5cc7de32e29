"""A registered model scored in this process: a :class:`~raylane.pipeline.ports.ModelClient`
for notebooks, tests and the bench's baseline (no Ray)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from raylane.pipeline.ports import Prediction

__all__ = ["LocalModelClient"]


class LocalModelClient:
    """A model from the registry scored in this process (notebooks, tests, no Ray)."""

    def __init__(self, name: str, uri: str, **load_kw: Any) -> None:
        from raylane.registry.loaded import load_model

        self.name = name
        self.model = load_model(uri, **load_kw)

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        scores = self.model.predict(columns)
        return Prediction(
            scores=np.asarray(scores),
            model_name=self.model.name,
            model_version=str(self.model.version),
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )
