"""Model flavors against the embedded stack's MLflow server: a scikit-learn model trained on
the fraud features, logged by the training helpers and registered, is loaded through
``models:/name@alias``; a missing column and a flavor the model lacks are refused with
messages that name the fix (never "not found")."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from raylane.config import load_serve_config
from raylane.errors import ModelError
from raylane.loading import import_file
from raylane.pipeline import LocalModelClient
from raylane.registry import MissingColumnsError, load_model, load_reference
from raylane.testing import World

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
END = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PRODUCED = load_serve_config(REPO / "serve_configs" / "fraud.yaml")[1].features.columns()


def _train_module() -> ModuleType:
    return import_file(REPO / "models" / "fraud" / "train.py", "raylane_models_fraud_train")


@pytest.fixture(scope="module")
def sk(stack) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A HistGradientBoostingClassifier on the fraud features, registered as <name>@champion."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    T = _train_module()  # puts models/ on sys.path
    import _training

    spec = _training.SklearnSpec(
        "champion",
        lambda: HistGradientBoostingClassifier(max_iter=60, random_state=0),
        description="scikit-learn histogram gradient boosting, all columns",
    )
    res = T.train(
        world=World(seed=3, n_users=300, n_merchants=60),
        hours=0.5,
        end=END,
        specs=(spec,),
        log=False,
        progress=False,
    )
    name = f"fraud_sk_{uuid.uuid4().hex[:8]}"
    ref = _training.log_and_register(
        res.champion, registered_name=name, tracking_uri=stack.mlflow_tracking_uri
    )
    return {"name": name, "ref": ref, "fitted": res.champion, "uri": stack.mlflow_tracking_uri}


def test_sklearn_model_loads_by_alias_and_scores_like_the_estimator(sk) -> None:  # type: ignore[no-untyped-def]
    name, fitted = sk["name"], sk["fitted"]
    m = load_model(f"models:/{name}@champion", tracking_uri=sk["uri"], required_columns=PRODUCED)
    assert (m.name, m.version, m.alias, m.flavor, m.device) == (
        name,
        sk["ref"].version,
        "champion",
        "sklearn",
        "cpu",
    )
    assert m.feature_names == fitted.feature_names == PRODUCED
    ref = fitted.reference
    cols = {c: ref[c].to_numpy() for c in m.feature_names}
    np.testing.assert_array_equal(m.predict(cols), fitted.predict(ref))
    np.testing.assert_array_equal(m.predict(cols), ref["score"].to_numpy())
    # the in-process ModelClient takes the same flavor and column check
    local = LocalModelClient(
        "champion",
        f"models:/{name}@champion",
        flavor="sklearn",
        required_columns=PRODUCED,
        tracking_uri=sk["uri"],
    )
    pred = asyncio.run(local.predict(cols))
    assert (pred.model_name, pred.model_version) == (name, str(m.version))
    np.testing.assert_array_equal(pred.scores, fitted.predict(ref))


def test_the_drift_reference_is_logged_with_the_sklearn_model(sk) -> None:  # type: ignore[no-untyped-def]
    ref = load_reference(f"models:/{sk['name']}@champion", tracking_uri=sk["uri"])
    fitted = sk["fitted"]
    assert list(ref.columns) == [*fitted.feature_names, "score", "label"]
    np.testing.assert_allclose(ref["score"], fitted.reference["score"])


def test_a_column_the_pipeline_does_not_produce_refuses_the_load(sk) -> None:  # type: ignore[no-untyped-def]
    name, v = sk["name"], sk["ref"].version
    produced = [c for c in PRODUCED if c != "user_txn_count_60s"]
    with pytest.raises(MissingColumnsError) as e:
        load_model(
            f"models:/{name}@champion",
            tracking_uri=sk["uri"],
            required_columns=produced,
            config="serve_configs/fraud.yaml",
        )
    assert e.value.message == (
        f"model {name} v{v} needs column 'user_txn_count_60s', which the pipeline does not "
        "produce; add it under features (event / online / windows / derived) in "
        "serve_configs/fraud.yaml, or retrain the model without it"
    )
    with pytest.raises(MissingColumnsError, match=f"model {name} v{v} needs column"):
        LocalModelClient(
            "champion",
            f"models:/{name}@champion",
            tracking_uri=sk["uri"],
            required_columns=produced,
        )


def test_a_flavor_the_model_lacks_names_its_flavors_not_not_found(sk) -> None:  # type: ignore[no-untyped-def]
    name, v = sk["name"], sk["ref"].version
    with pytest.raises(ModelError) as e:
        load_model(f"models:/{name}@champion", tracking_uri=sk["uri"], flavor="xgboost")
    msg = e.value.message
    assert "not found" not in msg
    assert msg.startswith(f"model {name} version {v} has flavors [")
    flavors = msg[msg.index("[") + 1 : msg.index("]")].split(", ")
    assert sorted(flavors) == ["python_function", "sklearn"]
    assert msg.endswith(
        "this deployment loads xgboost; set `flavor: sklearn` in the model config, or "
        "register a xgboost model"
    )


def test_mlflow_own_missing_flavor_error_is_reported_as_such(sk) -> None:  # type: ignore[no-untyped-def]
    """MLflow says RESOURCE_DOES_NOT_EXIST for a missing flavor; the boundary tells it apart."""
    import mlflow.artifacts
    import mlflow.xgboost

    from raylane.registry._mlflow import boundary, client

    name, v, uri = sk["name"], sk["ref"].version, sk["uri"]
    source = client(uri).get_model_version_download_uri(name, str(v))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source, tracking_uri=uri, dst_path=tempfile.mkdtemp()
    )
    with pytest.raises(ModelError) as e, boundary(f"loading models:/{name}/{v}", uri, name=name):
        mlflow.xgboost.load_model(local)
    assert "not found" not in e.value.message
    assert f"model {name} has no xgboost flavor" in e.value.message
