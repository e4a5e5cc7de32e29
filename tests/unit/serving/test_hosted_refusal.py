"""Hot swap refusals of a hosted model, with fakes for the registry (no Ray, no MLflow).

The fake loader applies the real column check (:func:`raylane.flavors.require_columns`)
against the columns the pipeline produces, as ``load_model(required_columns=...)`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from raylane.config import ModelConfig
from raylane.errors import DependencyError, ModelError
from raylane.flavors import MissingColumnsError, require_columns
from raylane.serving.hosted import HostedModel

PRODUCED = ["a", "b"]
COLS = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([1.0, 2.0, 3.0])}


class FakeModel:
    """Scores = row sum + version, so a test sees which version scored."""

    def __init__(self, version: int, feature_names: list[str]) -> None:
        self.name = "fraud"
        self.version = version
        self.feature_names = feature_names

    def stack(self, columns: Mapping[str, Any]) -> np.ndarray:
        return np.stack(
            [np.asarray(columns[c], dtype=np.float32) for c in self.feature_names], axis=1
        )

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1) + self.version


class Registry:
    """Versions by number with their input columns; `failures` make a load raise."""

    def __init__(self) -> None:
        self.alias = "1"
        self.columns = {1: ["a", "b"], 2: ["a", "b", "velocity_60s"], 3: ["b", "a"]}
        self.failures: dict[int, Exception] = {}
        self.loaded: list[int] = []

    def load(self, uri: str) -> FakeModel:
        v = int(self.alias if "@" in uri else uri.rsplit("/", 1)[1])
        self.loaded.append(v)
        if v in self.failures:
            raise self.failures[v]
        m = FakeModel(v, self.columns[v])
        require_columns(f"model fraud v{v}", m.feature_names, PRODUCED, "serve_configs/fraud.yaml")
        return m

    def resolve(self, uri: str) -> str:
        return self.alias


def _hosted() -> tuple[HostedModel, Registry]:
    reg = Registry()
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    return HostedModel(cfg, reg.load, reg.resolve), reg


def test_a_version_missing_a_column_is_refused_and_the_old_one_keeps_scoring(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h, reg = _hosted()
    before = h.score(COLS)
    reg.alias = "2"  # v2 needs velocity_60s, which the pipeline does not produce
    with caplog.at_level("ERROR", logger="raylane.serving"):
        assert h.check() is None
    assert h.version == "1" and h.swaps == []
    assert [r.version for r in h.refusals] == ["2"]
    assert "model fraud v2 needs column 'velocity_60s'" in h.refusals[0].reason
    assert "serve_configs/fraud.yaml" in h.refusals[0].reason
    assert "refused to swap fraud v1 -> v2, v1 keeps serving" in caplog.text
    assert "velocity_60s" in caplog.text
    after = h.score(COLS)
    assert after["model_version"] == "1"
    np.testing.assert_array_equal(after["scores"], before["scores"])


def test_a_refused_version_is_not_loaded_again_until_the_alias_moves() -> None:
    h, reg = _hosted()
    reg.alias = "2"
    for _ in range(5):
        assert h.check() is None
    assert reg.loaded == [1, 2]  # one attempt, then remembered
    assert len(h.refusals) == 1
    reg.alias = "3"  # the alias moves on to a good version: swapped
    swap = h.check()
    assert swap is not None and (swap.from_version, swap.to_version) == ("1", "3")
    assert h.score(COLS)["model_version"] == "3"
    reg.alias = "2"  # moved back to the refused version: tried once more, refused again
    assert h.check() is None and h.check() is None
    assert reg.loaded == [1, 2, 3, 2]
    assert [r.version for r in h.refusals] == ["2", "2"] and h.version == "3"


def test_any_load_failure_is_a_refusal_but_an_outage_is_retried() -> None:
    h, reg = _hosted()
    reg.failures[2] = ModelError("model fraud v2 has flavors [sklearn]; this deployment ...")
    reg.alias = "2"
    assert h.check() is None and h.version == "1"
    assert [r.version for r in h.refusals] == ["2"]
    assert h.refusals[0].reason.startswith("model fraud v2 has flavors [sklearn]")

    reg.failures[3] = DependencyError("MLflow at http://x is unreachable")
    reg.alias = "3"
    with pytest.raises(DependencyError):  # the poller counts it and polls again
        h.check()
    with pytest.raises(DependencyError):
        h.check()
    assert reg.loaded == [1, 2, 3, 3] and len(h.refusals) == 1
    del reg.failures[3]
    swap = h.check()
    assert swap is not None and swap.to_version == "3"


def test_the_first_load_fails_loudly() -> None:
    """No old version to keep: a replica whose model needs a missing column does not start."""
    reg = Registry()
    reg.alias = "2"
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    with pytest.raises(MissingColumnsError, match="model fraud v2 needs column 'velocity_60s'"):
        HostedModel(cfg, reg.load, reg.resolve)
