"""The in-process model client (``placement: ingress``) over a hosted model, with a fake
loader (no Ray, no MLflow): scores name their version, and a model that raises is an
outage (paused and retried), as a failing model deployment call is, never bad input."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from raylane.config import BreakerConfig, ModelConfig
from raylane.errors import DependencyError
from raylane.pipeline.breaker import GuardedModel, make_breaker
from raylane.pipeline.processor import is_outage
from raylane.serving.hosted import HostedModel
from raylane.serving.model_host import InProcessModelClient

from .test_hosted_refusal import COLS, PRODUCED, FakeModel

CFG = ModelConfig.model_validate(
    {"name": "champion", "uri": "models:/fraud/3", "placement": "ingress"}
)


def _client(model: Any) -> InProcessModelClient:
    hosted = HostedModel(CFG, load=lambda uri: model, resolve_version=lambda uri: "3")
    return InProcessModelClient(SimpleNamespace(cfg=CFG, score=hosted.score))  # type: ignore[arg-type]


def test_scores_come_from_the_hosted_version() -> None:
    pred = asyncio.run(_client(FakeModel(3, PRODUCED)).predict(COLS))
    np.testing.assert_allclose(pred.scores, COLS["a"] + COLS["b"] + 3, rtol=1e-6)
    assert (pred.model_name, pred.model_version) == ("fraud", "3")
    assert pred.latency_ms >= 0


class Broken(FakeModel):
    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        raise ValueError("feature shape mismatch, expected: 3, got 2")


def test_a_model_that_raises_is_an_outage_not_poison() -> None:
    client = _client(Broken(3, PRODUCED))
    with pytest.raises(DependencyError, match="model champion failed: ValueError") as ei:
        asyncio.run(client.predict(COLS))
    assert is_outage(ei.value)  # the ingress pauses and retries; nothing is dead-lettered
    assert isinstance(ei.value.__cause__, ValueError)
    guarded = GuardedModel(client, make_breaker(BreakerConfig(), "t", "model-champion"))
    with pytest.raises(DependencyError) as gi:  # through the breaker, still an outage
        asyncio.run(guarded.predict(COLS))
    assert is_outage(gi.value)
