"""Prediction cache and hot swap of a hosted model, with an injectable clock (no Ray)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from raylane.config import ModelConfig
from raylane.serving.cache import PredictionCache
from raylane.serving.hosted import HostedModel


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 3)).astype(np.float32)


def test_nothing_is_served_after_its_ttl() -> None:
    clock = Clock()
    c = PredictionCache(ttl_s=10, max_entries=100, timer=clock)
    x = _x(5)
    _, miss, keys = c.lookup("1", x)
    assert len(miss) == 5
    c.store("1", keys, miss, np.arange(5.0))
    clock.t += 9.9
    got, miss, _ = c.lookup("1", x)
    assert len(miss) == 0 and got.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    clock.t += 0.2  # 10.1 s after the store: hits did not extend the TTL
    got, miss, _ = c.lookup("1", x)
    assert len(miss) == 5 and np.isnan(got).all()


def test_nothing_is_served_across_versions() -> None:
    c = PredictionCache(ttl_s=60, max_entries=100, timer=Clock())
    x = _x(4)
    _, miss, keys = c.lookup("1", x)
    c.store("1", keys, miss, np.ones(4))
    got, miss, _ = c.lookup("2", x)
    assert len(miss) == 4 and np.isnan(got).all()


def test_size_is_bounded_and_hit_rate_counts() -> None:
    c = PredictionCache(ttl_s=60, max_entries=10, timer=Clock())
    x = _x(25)
    _, miss, keys = c.lookup("1", x)
    c.store("1", keys, miss, np.zeros(25))
    assert len(c) == 10
    _, miss2, _ = c.lookup("1", x)
    assert len(miss2) == 15
    assert c.stats.hits == 10 and c.stats.misses == 40
    assert c.stats.hit_rate == 10 / 50


class FakeModel:
    """Scores = row sum + version, so a test sees which version scored."""

    def __init__(self, version: int) -> None:
        self.name = "fraud"
        self.version = version
        self.feature_names = ["a", "b"]
        self.calls = 0

    def stack(self, columns: Mapping[str, Any]) -> np.ndarray:
        return np.stack(
            [np.asarray(columns[c], dtype=np.float32) for c in self.feature_names], axis=1
        )

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        self.calls += len(x)
        return x.sum(axis=1) + self.version


class Registry:
    def __init__(self) -> None:
        self.alias = "1"
        self.loaded: list[str] = []

    def load(self, uri: str) -> FakeModel:
        self.loaded.append(uri)
        v = int(self.alias if "@" in uri else uri.rsplit("/", 1)[1])
        return FakeModel(v)

    def resolve(self, uri: str) -> str:
        return self.alias


def _hosted(cache: dict | None = None, clock: Clock | None = None) -> tuple[HostedModel, Registry]:
    reg = Registry()
    cfg = ModelConfig.model_validate(
        {"name": "champion", "uri": "models:/fraud@champion", "cache": cache}
    )
    return HostedModel(cfg, reg.load, reg.resolve, timer=clock), reg


COLS = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([1.0, 2.0, 3.0])}


def test_hot_swap_happens_once_and_names_the_version() -> None:
    h, reg = _hosted()
    assert h.score(COLS)["model_version"] == "1"
    assert h.check() is None  # alias unchanged
    reg.alias = "2"
    swap = h.check()
    assert swap is not None and (swap.from_version, swap.to_version) == ("1", "2")
    assert reg.loaded == ["models:/fraud@champion", "models:/fraud/2"]
    out = h.score(COLS)
    assert out["model_version"] == "2" and np.allclose(out["scores"], np.array([1.1, 2.2, 3.3]) + 2)
    assert h.check() is None and len(h.swaps) == 1


def test_pinned_versions_are_not_polled() -> None:
    reg = Registry()
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud/1"})
    h = HostedModel(cfg, reg.load, reg.resolve)
    reg.alias = "2"
    assert not h.watches_alias and h.check() is None


def test_cache_serves_hits_and_is_invalidated_by_a_swap() -> None:
    clock = Clock()
    h, reg = _hosted({"ttl_s": 30, "max_entries": 1000}, clock)
    first = h.score(COLS)
    model = h.model
    assert model.calls == 3  # type: ignore[attr-defined]
    again = h.score(COLS)
    assert model.calls == 3 and np.allclose(first["scores"], again["scores"])  # type: ignore[attr-defined]
    assert h.cache is not None and h.cache.stats.hit_rate == 0.5
    reg.alias = "2"
    h.check()
    assert len(h.cache) == 0
    after = h.score(COLS)
    assert after["model_version"] == "2" and np.allclose(after["scores"], first["scores"] + 1)
    clock.t += 31
    h.score(COLS)
    assert h.model.calls == 6  # type: ignore[attr-defined]  # expired: scored again


def test_merged_calls_are_scored_once_and_split_back() -> None:
    from raylane.serving.hosted import score_merged

    h, _ = _hosted()
    calls = [
        {"a": np.array([0.1, 0.2]), "b": np.array([1.0, 2.0])},
        {"a": np.array([0.5]), "b": np.array([5.0])},
        {"a": np.array([0.3, 0.4, 0.6]), "b": np.array([3.0, 4.0, 6.0])},
    ]
    n_calls = []

    def score(cols: Mapping[str, Any]) -> dict[str, Any]:
        n_calls.append(len(cols["a"]))
        return h.score(cols)

    outs = score_merged(score, calls)
    assert n_calls == [6]
    for c, o in zip(calls, outs, strict=True):
        assert np.allclose(o["scores"], c["a"] + c["b"] + 1) and o["model_version"] == "1"
    # different columns: one call each
    n_calls.clear()
    score_merged(
        score, [calls[0], {"a": np.array([1.0]), "b": np.array([1.0]), "c": np.array([0.0])}]
    )
    assert n_calls == [2, 1]
