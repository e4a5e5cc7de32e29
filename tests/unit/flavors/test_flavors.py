"""Model flavors without services: each loader scores a model saved locally with
``mlflow.<flavor>.save_model`` exactly as the library itself does; the flavor picker;
the refusal of a model that needs a column the pipeline does not produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, get_args

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from raylane.config import ModelConfig
from raylane.errors import ModelError
from raylane.flavors import (
    FLAVORS,
    PREFERENCE,
    MissingColumnsError,
    model_flavors,
    pick_flavor,
    require_columns,
)
from raylane.registry import LoadedModel

COLS = ["amount", "risk", "velocity_60s"]
#: skips MLflow's requirement inference (a subprocess that imports the model, ~5 s per save)
REQS = ["mlflow"]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(400, len(COLS))), columns=COLS)
    y = ((x.amount + 0.5 * x.risk + rng.normal(scale=0.5, size=len(x))) > 0).astype(int)
    return x, y.to_numpy()


def _batch(n: int = 50, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(COLS))), columns=COLS)


def _sig(x: pd.DataFrame, y: Any) -> Any:
    return infer_signature(x.head(20), np.asarray(y)[:20])


# -- one loader per flavor ---------------------------------------------------------------


def test_xgboost_scores_like_inplace_predict(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.xgboost
    import xgboost as xgb

    x, y = data
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x.to_numpy(np.float32), label=y, feature_names=COLS),
        num_boost_round=20,
    )
    path = str(tmp_path / "xgb")
    mlflow.xgboost.save_model(
        booster, path, signature=_sig(x, y), model_format="ubj", pip_requirements=REQS
    )

    s = FLAVORS["xgboost"].load(path, device="cpu", nthread=1)
    assert (s.flavor, s.feature_names, s.device, s.dtype) == ("xgboost", COLS, "cpu", np.float32)
    b = _batch().to_numpy(np.float32)
    np.testing.assert_array_equal(s.predict_matrix(b), booster.inplace_predict(b))
    assert s.predict_matrix(b[:0]).shape == (0,)


def test_sklearn_classifier_scores_its_positive_class(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    import skops.io
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = data
    clf = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    path = str(tmp_path / "hgb")
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(clf))
    mlflow.sklearn.save_model(
        clf,
        path,
        signature=_sig(x, clf.predict_proba(x)[:, 1]),
        skops_trusted_types=trusted,
        pip_requirements=REQS,
    )

    s = FLAVORS["sklearn"].load(path)
    assert (s.flavor, s.feature_names, s.dtype) == ("sklearn", COLS, np.float64)
    b = _batch()
    np.testing.assert_array_equal(
        s.predict_matrix(b.to_numpy(np.float64)), clf.predict_proba(b)[:, 1]
    )


def test_sklearn_regressor_fitted_on_an_array_uses_predict(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    x, y = data
    reg = Ridge().fit(x.to_numpy(), y)  # no feature_names_in_: the signature names them
    path = str(tmp_path / "ridge")
    mlflow.sklearn.save_model(
        reg, path, signature=_sig(x, reg.predict(x.to_numpy())), pip_requirements=REQS
    )

    s = FLAVORS["sklearn"].load(path)
    assert s.feature_names == COLS
    b = _batch().to_numpy(np.float64)
    np.testing.assert_array_equal(s.predict_matrix(b), reg.predict(b))


def test_sklearn_multiclass_is_refused(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    x, y = data
    y3 = y + (x.risk.to_numpy() > 1)
    clf = LogisticRegression().fit(x, y3)
    path = str(tmp_path / "lr3")
    mlflow.sklearn.save_model(clf, path, signature=_sig(x, y3), pip_requirements=REQS)
    with pytest.raises(ModelError, match=r"classifier with 3 classes .* binary classifier"):
        FLAVORS["sklearn"].load(path, label="model fraud v9")


def test_lightgbm_scores_like_its_booster(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import lightgbm as lgb
    import mlflow.lightgbm

    x, y = data
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x.to_numpy(), label=y, feature_name=COLS),
        num_boost_round=20,
    )
    path = str(tmp_path / "lgb")
    mlflow.lightgbm.save_model(
        booster, path, signature=_sig(x, booster.predict(x.to_numpy())), pip_requirements=REQS
    )

    s = FLAVORS["lightgbm"].load(path, nthread=1)
    assert (s.flavor, s.feature_names, s.dtype) == ("lightgbm", COLS, np.float64)
    b = _batch().to_numpy(np.float64)
    np.testing.assert_array_equal(s.predict_matrix(b), booster.predict(b))


def test_lightgbm_sklearn_wrapper_is_scored_by_its_booster(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import lightgbm as lgb
    import mlflow.lightgbm

    x, y = data
    clf = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1, n_jobs=1).fit(x, y)
    path = str(tmp_path / "lgbc")
    mlflow.lightgbm.save_model(
        clf, path, signature=_sig(x, clf.predict_proba(x)[:, 1]), pip_requirements=REQS
    )

    s = FLAVORS["lightgbm"].load(path)
    b = _batch()
    np.testing.assert_allclose(
        s.predict_matrix(b.to_numpy(np.float64)), clf.predict_proba(b)[:, 1], rtol=0, atol=0
    )


class _Weighted(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """A custom pyfunc model: a weighted sum squashed to (0, 1), one column out."""

    W: ClassVar[dict[str, float]] = {"amount": 0.7, "risk": -0.2, "velocity_60s": 1.3}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        z = sum(w * model_input[c] for c, w in self.W.items())
        return pd.DataFrame({"score": 1.0 / (1.0 + np.exp(-z))})


def test_pyfunc_takes_a_frame_and_gives_one_score_per_row(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    x, _ = data
    path = str(tmp_path / "pyfunc")
    out = _Weighted().predict(None, x)
    mlflow.pyfunc.save_model(
        path, python_model=_Weighted(), signature=_sig(x, out), pip_requirements=REQS
    )
    assert model_flavors(path) == ["python_function"]

    s = FLAVORS["python_function"].load(path)
    assert (s.flavor, s.feature_names) == ("python_function", COLS)
    b = _batch()
    np.testing.assert_array_equal(
        s.predict_matrix(b.to_numpy(np.float64)), _Weighted().predict(None, b)["score"].to_numpy()
    )


def test_pyfunc_is_the_fallback_for_any_flavor(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    x, y = data
    reg = Ridge().fit(x, y)
    path = str(tmp_path / "ridge-pyfunc")
    mlflow.sklearn.save_model(reg, path, signature=_sig(x, reg.predict(x)), pip_requirements=REQS)
    loader = pick_flavor(model_flavors(path), "python_function")
    s = loader.load(path)
    b = _batch()
    # the same linear model, but a matrix (C order) against a DataFrame (its BLAS call may sum
    # in another order): equal to the last few bits, not bit for bit
    np.testing.assert_allclose(
        s.predict_matrix(b.to_numpy(np.float64)), reg.predict(b), rtol=1e-12, atol=1e-15
    )


def test_pyfunc_with_two_outputs_per_row_names_the_fix(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    x, y = data
    clf = LogisticRegression().fit(x, y)
    path = str(tmp_path / "proba")
    mlflow.sklearn.save_model(
        clf,
        path,
        signature=_sig(x, clf.predict_proba(x)),
        pyfunc_predict_fn="predict_proba",
        pip_requirements=REQS,
    )
    s = FLAVORS["python_function"].load(path)
    with pytest.raises(ModelError, match=r"shape \(50, 2\) for 50 rows.*one score per row"):
        s.predict_matrix(_batch().to_numpy(np.float64))


def test_a_model_without_a_signature_or_names_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "nosig")
    mlflow.pyfunc.save_model(path, python_model=_Weighted(), pip_requirements=REQS)
    with pytest.raises(ModelError, match=r"model m v1 has neither an MLflow signature"):
        FLAVORS["python_function"].load(path, label="model m v1")


# -- the picker ---------------------------------------------------------------------------


def test_the_table_matches_the_config_choices() -> None:
    literal = ModelConfig.model_fields["flavor"].annotation
    choices = {a for arg in get_args(literal) for a in get_args(arg)}
    assert choices == set(FLAVORS) == set(PREFERENCE)
    assert all(FLAVORS[k].name == k for k in FLAVORS)


def test_picker_prefers_native_flavors_and_falls_back_to_pyfunc() -> None:
    assert pick_flavor(["python_function", "xgboost"]) is FLAVORS["xgboost"]
    assert pick_flavor(["python_function", "sklearn"]) is FLAVORS["sklearn"]
    assert pick_flavor(["sklearn", "lightgbm", "python_function"]) is FLAVORS["lightgbm"]
    assert pick_flavor(["python_function", "onnx"]) is FLAVORS["python_function"]
    # the config's flavor wins when the model has it
    assert (
        pick_flavor(["python_function", "xgboost"], "python_function") is FLAVORS["python_function"]
    )


def test_picker_names_the_model_flavors_and_the_fix() -> None:
    with pytest.raises(ModelError) as e:
        pick_flavor(["sklearn", "python_function"], "xgboost", label="model fraud version 3")
    assert e.value.message == (
        "model fraud version 3 has flavors [sklearn, python_function]; this deployment loads "
        "xgboost; set `flavor: sklearn` in the model config, or register a xgboost model"
    )
    assert "not found" not in e.value.message
    # a model with only a flavor raylane cannot load: the fix is registering another model
    with pytest.raises(ModelError) as e:
        pick_flavor(["onnx"], "sklearn", label="model churn version 2")
    assert e.value.message.startswith(
        "model churn version 2 has flavors [onnx]; this deployment loads sklearn; register a "
        "sklearn model"
    )
    with pytest.raises(ModelError, match=r"model fraud v4 has flavors \[onnx\]; raylane loads"):
        pick_flavor(["onnx"], label="model fraud v4")
    with pytest.raises(ModelError, match=r"flavor 'h2o' is not one raylane loads"):
        pick_flavor(["h2o"], "h2o")


def test_mlflow_missing_flavor_is_not_reported_as_not_found(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    """MLflow raises RESOURCE_DOES_NOT_EXIST for a flavor the model lacks, like a missing model."""
    import mlflow.sklearn
    import mlflow.xgboost
    from mlflow.exceptions import MlflowException
    from sklearn.linear_model import Ridge

    from raylane.registry._mlflow import boundary, is_not_found, missing_flavor

    x, y = data
    path = str(tmp_path / "sk")
    mlflow.sklearn.save_model(Ridge().fit(x, y), path, pip_requirements=REQS)
    with pytest.raises(MlflowException) as raw:
        mlflow.xgboost.load_model(path)
    assert raw.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert missing_flavor(raw.value) == "xgboost" and not is_not_found(raw.value)
    with pytest.raises(ModelError) as e, boundary("loading models:/fraud/3", "x", name="fraud"):
        mlflow.xgboost.load_model(path)
    assert "not found" not in e.value.message
    assert "model fraud has no xgboost flavor" in e.value.message
    assert "set `flavor:` in the model config" in e.value.message


# -- refusing a model that needs a column the pipeline does not produce --------------------


def test_missing_column_refusal_names_column_model_and_config() -> None:
    with pytest.raises(MissingColumnsError) as e:
        require_columns("model fraud v3", COLS, ["amount", "risk"], "serve_configs/fraud.yaml")
    assert e.value.message == (
        "model fraud v3 needs column 'velocity_60s', which the pipeline does not produce; add "
        "it under features (event / online / windows / derived) in serve_configs/fraud.yaml, "
        "or retrain the model without it"
    )
    assert isinstance(e.value, ModelError) and not e.value.retriable
    with pytest.raises(MissingColumnsError, match=r"columns 'risk', 'velocity_60s'.* them"):
        require_columns("model fraud v3", COLS, ["amount"])
    require_columns("model fraud v3", COLS, [*COLS, "extra"])  # extra columns are fine


def _loaded(tmp_path: Path, data) -> LoadedModel:  # type: ignore[no-untyped-def]
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    x, y = data
    path = str(tmp_path / "ridge-loaded")
    mlflow.sklearn.save_model(Ridge().fit(x, y), path, signature=_sig(x, y), pip_requirements=REQS)
    scorer = FLAVORS["sklearn"].load(path)
    return LoadedModel("fraud", 3, "models:/fraud/3", scorer, config="serve_configs/fraud.yaml")


def test_stack_refuses_a_missing_column_instead_of_nan(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    m = _loaded(tmp_path, data)
    b = _batch(8)
    cols = {c: b[c].to_numpy() for c in COLS}
    np.testing.assert_array_equal(m.predict(cols), m.scorer.raw.predict(b))
    partial = {c: v for c, v in cols.items() if c != "velocity_60s"}
    assert m.missing_columns(partial) == ["velocity_60s"]
    with pytest.raises(MissingColumnsError, match=r"model fraud v3 needs column 'velocity_60s'"):
        m.stack(partial)
    with pytest.raises(MissingColumnsError):
        m.predict(partial)


def test_config_rejects_an_unknown_flavor_naming_the_path() -> None:
    from pydantic import ValidationError

    base = {"name": "champion", "uri": "models:/fraud@champion"}
    assert ModelConfig.model_validate(base).flavor is None
    assert ModelConfig.model_validate({**base, "flavor": "sklearn"}).flavor == "sklearn"
    with pytest.raises(ValidationError, match=r"flavor\n.*'xgboost', 'sklearn', 'lightgbm'"):
        ModelConfig.model_validate({**base, "flavor": "onnx"})


def test_lightgbm_missing_from_the_replica_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # `import lightgbm` raises ImportError
    with pytest.raises(ModelError, match=r"model churn v2 is a LightGBM model but the lightgbm"):
        FLAVORS["lightgbm"].load(str(tmp_path), label="model churn v2")
