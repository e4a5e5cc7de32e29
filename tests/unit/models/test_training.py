"""Fraud training without MLflow: features match the serve config, held-out AUC >= 0.9."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from raylane.config import load_serve_config
from raylane.features.window import reference_window_features
from raylane.loading import import_file
from raylane.testing import World

REPO = Path(__file__).resolve().parents[3]
END = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _load_train() -> ModuleType:
    return import_file(REPO / "models" / "fraud" / "train.py", "raylane_models_fraud_train")


@pytest.fixture(scope="module")
def T() -> ModuleType:
    return _load_train()


@pytest.fixture(scope="module")
def result(T: ModuleType):  # type: ignore[no-untyped-def]
    return T.train(
        world=World(seed=3, n_users=500, n_merchants=100),
        hours=1.0,
        end=END,
        log=False,
        progress=False,
    )


def test_heldout_auc(result) -> None:  # type: ignore[no-untyped-def]
    assert result.champion.auc >= 0.9, result.champion.auc
    assert result.challenger.auc >= 0.9, result.challenger.auc
    assert result.registered == {}
    assert 0.01 < result.fraud_rate < 0.05


def test_columns_follow_the_serve_config(result) -> None:  # type: ignore[no-untyped-def]
    cols = load_serve_config(REPO / "serve_configs" / "fraud.yaml")[1].features.columns()
    assert result.champion.feature_names == cols
    assert result.champion.booster.feature_names == cols
    ch = result.challenger.feature_names
    assert ch == [c for c in cols if not c.startswith("merchant_profile__")] and ch != cols
    assert (
        result.challenger.booster.num_boosted_rounds()
        < result.champion.booster.num_boosted_rounds()
    )


def test_reference_sample(result) -> None:  # type: ignore[no-untyped-def]
    ref = result.champion.reference
    assert list(ref.columns) == [*result.champion.feature_names, "score", "label"]
    assert 0 < len(ref) <= 5000
    assert ref.score.between(0, 1).all()
    np.testing.assert_allclose(result.champion.predict(ref), ref.score, rtol=1e-6)


def test_a_model_that_leaves_columns_out_keeps_them_in_its_reference(result) -> None:  # type: ignore[no-untyped-def]
    # the drift monitor compares the pipeline's columns, whichever a model reads: after the
    # challenger (no merchant profile) is promoted, drift on a merchant column is still seen
    ch, cols = result.challenger, result.champion.feature_names
    left_out = [c for c in cols if c not in ch.feature_names]
    assert left_out and all(c.startswith("merchant_profile__") for c in left_out)
    assert list(ch.reference.columns) == [*ch.feature_names, *left_out, "score", "label"]
    assert ch.reference[left_out].notna().any().all()
    np.testing.assert_allclose(ch.predict(ch.reference), ch.reference.score, rtol=1e-6)
    from raylane.monitoring.drift import DriftDetector

    det = DriftDetector(ch.reference, left_out)  # raised "has no column(s)" before
    assert not det.evaluate(ch.reference.iloc[:300])[0].drifted


def test_window_features_are_the_reference_semantics(T: ModuleType) -> None:
    world = World(seed=2, n_users=50, n_merchants=20)
    events = world.history(END, hours=0.05)
    feats = T.load_features()
    data = T.build_dataset(events, world, feats, END)
    want = reference_window_features([e.event for e in events], feats.windows)
    keep = np.array([e.kind != "prior" for e in events])
    for w in feats.windows:
        np.testing.assert_array_equal(data.frame[w.name].to_numpy(), want[w.name][keep])
    profiles = world.user_profiles(END).set_index("user_id")
    users = [e.event["user_id"] for e in events if e.kind != "prior"]
    np.testing.assert_array_equal(
        data.frame["user_risk_profile__risk_score"].to_numpy(),
        profiles.risk_score.loc[users].to_numpy(),
    )
    assert not data.frame.isna().any().any()


def test_logging_a_model_leaves_the_process_tracking_uri_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI; training on a scratch store must
    not leave it set, or every Ray replica started later in the process looks there."""
    import mlflow

    from raylane import training as _training

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    scratch = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with _training._tracking(scratch):
        assert mlflow.get_tracking_uri() == scratch
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:5000"
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with _training._tracking(scratch):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ
