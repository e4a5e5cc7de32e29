"""Model and reference downloads do not outlive their use: load_model deletes its temporary
directory once the model is in memory (a pyfunc model's when the model is collected), and
load_reference once the sample is read. No MLflow server: the registry lookups are faked and
the "download" copies a model saved locally with ``mlflow.<flavor>.save_model``."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

import raylane.registry.loaded as loaded
from raylane.errors import ModelError
from raylane.registry import load_model, load_reference
from raylane.registry.refs import ModelRef

COLS = ["amount", "risk", "velocity_60s"]
REQS = ["mlflow"]  # skips MLflow's requirement inference (a subprocess per save)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, len(COLS))), columns=COLS)
    y = ((x.amount + 0.5 * x.risk + rng.normal(scale=0.5, size=len(x))) > 0).astype(int)
    return x, y.to_numpy()


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private TMPDIR, so what raylane leaves in it is all that is in it."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert tempfile.gettempdir() == str(root)
    yield root


class _Client:
    def __init__(self, source: str) -> None:
        self.source = source

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return self.source


def fake_registry(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """models:/fraud/3 is the model saved at `source`; downloading it copies the folder."""

    def download(artifact_uri: str | None = None, dst_path: str | None = None, **kw: Any) -> str:
        assert artifact_uri == source and dst_path is not None
        return shutil.copytree(source, Path(dst_path) / Path(source).name)

    monkeypatch.setattr(loaded, "resolve_tracking_uri", lambda uri: "file:///unused")
    monkeypatch.setattr(loaded, "resolve", lambda uri, tracking_uri=None: ModelRef.of("fraud", 3))
    monkeypatch.setattr(loaded, "client", lambda uri: _Client(source))
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)


def _sig(x: pd.DataFrame, y: Any) -> Any:
    return infer_signature(x.head(20), np.asarray(y)[:20])


def save_xgboost(path: str, x: pd.DataFrame, y: np.ndarray) -> Callable[[np.ndarray], Any]:
    import mlflow.xgboost
    import xgboost as xgb

    b = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x.to_numpy(np.float32), label=y, feature_names=COLS),
        num_boost_round=10,
    )
    mlflow.xgboost.save_model(b, path, signature=_sig(x, y), pip_requirements=REQS)
    return lambda m: b.inplace_predict(m.astype(np.float32))


def save_sklearn(path: str, x: pd.DataFrame, y: np.ndarray) -> Callable[[np.ndarray], Any]:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression().fit(x.to_numpy(), y)
    mlflow.sklearn.save_model(clf, path, signature=_sig(x, y), pip_requirements=REQS)
    return lambda m: clf.predict_proba(m)[:, 1]


def save_lightgbm(path: str, x: pd.DataFrame, y: np.ndarray) -> Callable[[np.ndarray], Any]:
    import lightgbm as lgb
    import mlflow.lightgbm

    b = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x.to_numpy(), label=y, feature_name=COLS),
        num_boost_round=10,
    )
    mlflow.lightgbm.save_model(b, path, signature=_sig(x, y), pip_requirements=REQS)
    return lambda m: b.predict(m)


class _Weighted(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """A custom pyfunc model reading a weight from its artifact file at load time."""

    W: ClassVar[dict[str, float]] = {"amount": 0.7, "risk": -0.2, "velocity_60s": 1.3}

    def load_context(self, context: Any) -> None:
        self.scale = float(Path(context.artifacts["scale"]).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        z = sum(w * model_input[c] for c, w in self.W.items()) * self.scale
        return pd.DataFrame({"score": 1.0 / (1.0 + np.exp(-z))})


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _batch() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(20, len(COLS)))


@pytest.mark.parametrize(
    ("flavor", "save"),
    [("xgboost", save_xgboost), ("sklearn", save_sklearn), ("lightgbm", save_lightgbm)],
)
def test_native_flavors_leave_no_download_behind(
    flavor: str,
    save: Callable[[str, pd.DataFrame, np.ndarray], Callable[[np.ndarray], Any]],
    tmp_path: Path,
    tmp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    x, y = data
    source = str(tmp_path / "saved" / flavor)
    expected = save(source, x, y)
    fake_registry(monkeypatch, source)

    m = load_model("models:/fraud/3", flavor=flavor)

    assert m.flavor == flavor and (m.name, m.version) == ("fraud", 3)
    assert leftovers(tmp_root) == []  # deleted as soon as the model was in memory
    b = _batch()  # and the model scores from memory
    np.testing.assert_allclose(
        m.predict_matrix(m.stack(dict(zip(COLS, b.T, strict=True)))), expected(b), rtol=1e-6
    )


def test_a_pyfunc_keeps_its_download_until_the_model_is_collected(
    tmp_path: Path,
    tmp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    x, _ = data
    scale = tmp_path / "scale.txt"
    scale.write_text("0.5")
    source = str(tmp_path / "saved" / "pyfunc")
    model = _Weighted()
    model.scale = 0.5
    mlflow.pyfunc.save_model(
        source,
        python_model=_Weighted(),
        artifacts={"scale": str(scale)},
        signature=_sig(x, model.predict(None, x)),
        pip_requirements=REQS,
    )
    fake_registry(monkeypatch, source)

    m = load_model("models:/fraud/3")

    assert m.flavor == "python_function"
    (kept,) = leftovers(tmp_root)  # a pyfunc may keep reading its files: kept while in use
    assert kept.startswith("raylane-fraud-3-")
    assert m.predict_matrix(_batch()).shape == (20,)
    swapped = load_model("models:/fraud/3")  # a hot swap replaces the model...
    assert len(leftovers(tmp_root)) == 2
    del m  # ...and the replaced one is collected
    gc.collect()
    assert leftovers(tmp_root) != [kept] and len(leftovers(tmp_root)) == 1
    del swapped
    gc.collect()
    assert leftovers(tmp_root) == []


def test_a_model_logged_with_code_paths_keeps_its_download_while_in_use(
    tmp_path: Path,
    tmp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    x, y = data
    helper = tmp_path / "raylane_test_helper_mod.py"
    helper.write_text("SCALE = 1.0\n")
    source = str(tmp_path / "saved" / "with-code")
    clf = LogisticRegression().fit(x.to_numpy(), y)
    mlflow.sklearn.save_model(
        clf, source, signature=_sig(x, y), code_paths=[str(helper)], pip_requirements=REQS
    )
    fake_registry(monkeypatch, source)
    monkeypatch.setattr(sys, "path", list(sys.path))  # MLflow adds the code folder to it

    m = load_model("models:/fraud/3", flavor="sklearn")
    assert len(leftovers(tmp_root)) == 1  # MLflow put its code folder on sys.path
    del m
    gc.collect()
    assert leftovers(tmp_root) == []


def test_a_failed_load_leaves_no_download_behind(
    tmp_path: Path, tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "saved" / "not-a-model"
    source.mkdir(parents=True)
    (source / "model.bin").write_bytes(b"junk")
    fake_registry(monkeypatch, str(source))

    with pytest.raises(ModelError, match="no readable MLmodel file"):
        load_model("models:/fraud/3")
    assert leftovers(tmp_root) == []


def test_the_reference_download_is_deleted_once_read(
    tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = pd.DataFrame({"amount": [1.0, 2.0, 3.0], "score": [0.1, 0.2, 0.3]})
    seen: list[Path] = []

    def download(
        run_id: str | None = None,
        artifact_path: str | None = None,
        dst_path: str | None = None,
        **kw: Any,
    ) -> str:
        assert run_id == "run-1" and artifact_path == loaded.REFERENCE_ARTIFACT
        assert dst_path is not None and Path(dst_path).parent == tmp_root
        out = Path(dst_path) / artifact_path
        out.parent.mkdir(parents=True)
        ref.to_parquet(out)
        seen.append(out)
        return str(out)

    monkeypatch.setattr(loaded, "resolve_tracking_uri", lambda uri: "file:///unused")
    monkeypatch.setattr(
        loaded, "resolve", lambda uri, tracking_uri=None: ModelRef.of("fraud", 3, run_id="run-1")
    )
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)

    got = load_reference("models:/fraud/3")

    pd.testing.assert_frame_equal(got, ref)
    assert seen and not seen[0].exists()
    assert leftovers(tmp_root) == []
