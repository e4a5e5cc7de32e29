"""The MLflow registry layer on a throwaway sqlite tracking store (no server, no Ray)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from raylane.errors import ModelError
from raylane.loading import import_file
from raylane.registry import (
    LoadedModel,
    MissingColumnsError,
    ModelRef,
    load_model,
    load_reference,
    parse_uri,
    resolve,
    set_alias,
)
from raylane.testing import World

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
END = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _load_train(use_case: str = "fraud") -> ModuleType:
    return import_file(REPO / "models" / use_case / "train.py", f"raylane_models_{use_case}_train")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tracking_uri: str):  # type: ignore[no-untyped-def]
    """fraud v1 = champion (all columns), v2 = challenger (no merchant columns)."""
    T = _load_train()
    return T.train(
        world=World(seed=3, n_users=300, n_merchants=60),
        hours=0.5,
        end=END,
        tracking_uri=tracking_uri,
        progress=False,
    )


@pytest.fixture(scope="module")
def batch(trained) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    ref = trained.champion.reference
    return {c: ref[c].to_numpy() for c in trained.champion.feature_names}


def test_aliases_resolve_to_pinned_versions(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    assert trained.registered["champion"] == resolve(
        "models:/fraud@champion", tracking_uri=tracking_uri
    )
    champ = resolve("models:/fraud@champion", tracking_uri=tracking_uri)
    chall = resolve("models:/fraud@challenger", tracking_uri=tracking_uri)
    assert (champ.name, champ.version, champ.alias, champ.uri_pinned) == (
        "fraud",
        1,
        "champion",
        "models:/fraud/1",
    )
    assert (chall.version, chall.uri_pinned) == (2, "models:/fraud/2")
    pinned = resolve("models:/fraud/2", tracking_uri=tracking_uri)
    assert pinned.alias is None and pinned.version == 2 and pinned.run_id == chall.run_id


def test_load_model_round_trip(trained, batch, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    m = load_model("models:/fraud@champion", tracking_uri=tracking_uri)
    assert isinstance(m, LoadedModel)
    assert (m.name, m.version, m.uri, m.alias) == ("fraud", 1, "models:/fraud/1", "champion")
    assert m.feature_names == trained.champion.feature_names
    want = trained.champion.booster.inplace_predict(
        np.column_stack([batch[c] for c in m.feature_names]).astype(np.float32)
    )
    np.testing.assert_array_equal(m.predict(batch), want)
    assert m.predict({c: v[:0] for c, v in batch.items()}).shape == (0,)


def test_challenger_scores_its_own_columns(trained, batch, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    m = load_model("models:/fraud@challenger", tracking_uri=tracking_uri)
    assert m.feature_names == trained.challenger.feature_names
    assert not any(c.startswith("merchant_profile__") for c in m.feature_names)
    x = np.column_stack([batch[c] for c in m.feature_names]).astype(np.float32)
    np.testing.assert_array_equal(m.predict(batch), trained.challenger.booster.inplace_predict(x))
    # A missing column is refused, never scored as missing (NaN).
    partial = {c: v for c, v in batch.items() if c != "amount"}
    assert m.missing_columns(partial) == ["amount"]
    with pytest.raises(
        MissingColumnsError,
        match=r"model fraud v2 needs column 'amount', which the pipeline does not produce; "
        r"add it under features \(event / online / windows / derived\)",
    ):
        m.predict(partial)
    with pytest.raises(MissingColumnsError, match=r"model fraud v2 needs column 'amount'"):
        load_model(
            "models:/fraud@challenger",
            tracking_uri=tracking_uri,
            required_columns=[c for c in batch if c != "amount"],
        )


def test_reference_sample_is_logged(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    ref = load_reference("models:/fraud@champion", tracking_uri=tracking_uri)
    assert list(ref.columns) == [*trained.champion.feature_names, "score", "label"]
    assert 0 < len(ref) <= 5000
    np.testing.assert_allclose(ref.score, trained.champion.reference.score)


def test_set_alias_moves_it(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    ref = set_alias("fraud", "canary", 2, tracking_uri=tracking_uri)
    assert ref == ModelRef("fraud", 2, "canary", "models:/fraud/2", ref.run_id)
    assert resolve("models:/fraud@canary", tracking_uri=tracking_uri).version == 2
    set_alias("fraud", "canary", 1, tracking_uri=tracking_uri)
    assert resolve("models:/fraud@canary", tracking_uri=tracking_uri).version == 1


def test_missing_alias_names_the_fix(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ModelError,
        match=r"registered model fraud has no alias gold .*"
        r"run `raylane bootstrap`",
    ) as e:
        load_model("models:/fraud@gold", tracking_uri=tracking_uri)
    assert "champion->v1" in e.value.message and e.value.stage == "registry"
    assert e.value.__cause__ is not None


def test_missing_model_or_version(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ModelError,
        match=r"registered model churn does not exist .*"
        r"raylane bootstrap",
    ):
        resolve("models:/churn@champion", tracking_uri=tracking_uri)
    with pytest.raises(ModelError, match="has no version 99"):
        resolve("models:/fraud/99", tracking_uri=tracking_uri)
    with pytest.raises(ModelError, match=r"not found|does not exist"):
        set_alias("fraud", "x", 99, tracking_uri=tracking_uri)


def test_churn_registers_as_its_own_model(trained, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    C = _load_train("churn")
    res = C.train(
        world=World(seed=3, n_users=300),
        hours=0.75,
        end=END,
        tracking_uri=tracking_uri,
        progress=False,
    )
    champ = load_model("models:/churn@champion", tracking_uri=tracking_uri)
    chall = load_model("models:/churn@challenger", tracking_uri=tracking_uri)
    assert (champ.name, champ.version, chall.version) == ("churn", 1, 2)
    assert champ.feature_names == res.champion.feature_names
    assert chall.feature_names == ["session_minutes", "pages_viewed", "days_since_last_login"]
    ref = res.champion.reference
    cols = {c: ref[c].to_numpy() for c in champ.feature_names}
    np.testing.assert_array_equal(champ.predict(cols), res.champion.predict(ref))
    assert resolve("models:/fraud@champion", tracking_uri=tracking_uri).version == 1


def test_bad_uri() -> None:
    assert parse_uri("models:/fraud@champion") == ("fraud", "champion", None)
    assert parse_uri("models:/fraud/3") == ("fraud", None, 3)
    with pytest.raises(ModelError, match="models:/<name>@<alias>"):
        resolve("runs:/abc/model", tracking_uri="sqlite:///unused.db")


def test_unreachable_server_fails_fast() -> None:
    import time

    from raylane.errors import DependencyError

    t0 = time.perf_counter()
    with pytest.raises(DependencyError, match=r"unreachable.*raylane dev up") as e:
        load_model("models:/fraud@champion", tracking_uri="http://127.0.0.1:9")
    assert e.value.retriable and time.perf_counter() - t0 < 5.0
