"""Churn training without MLflow: the second use case is learnable from its own columns."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from raylane.features.window import reference_window_features
from raylane.loading import import_file
from raylane.testing import World

REPO = Path(__file__).resolve().parents[3]
END = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def C() -> ModuleType:
    return import_file(REPO / "models" / "churn" / "train.py", "raylane_models_churn_train")


def test_churn_models(C: ModuleType) -> None:
    res = C.train(world=World(seed=3, n_users=500), hours=1.0, end=END, log=False, progress=False)
    assert res.champion.auc >= 0.9, res.champion.auc
    assert res.challenger.auc < res.champion.auc
    feats = C.load_features()
    assert res.champion.feature_names == feats.columns()
    assert res.challenger.feature_names == list(feats.event)
    assert 0.05 < res.positive_rate < 0.35


def test_dataset_uses_reference_windows_after_warmup(C: ModuleType) -> None:
    feats = C.DEFAULT_FEATURES
    events = World(seed=4, n_users=50).activity_history(END, hours=0.75)
    data = C.build_dataset(events, feats)
    want = reference_window_features([e.event for e in events], feats.windows)
    n = len(data.label)
    assert 0 < n < len(events)
    t0 = events[0].event["event_time"]
    assert data.event_time.min() >= t0 + 1_800_000
    for w in feats.windows:
        np.testing.assert_array_equal(data.frame[w.name].to_numpy(), want[w.name][-n:])
