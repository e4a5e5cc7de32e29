"""Feast repo loading, source writing, apply and reader set-up; no services (dead Redis port)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from raylane.config import OnlineFeatureView, load_serve_config
from raylane.errors import ConfigError, DependencyError
from raylane.features import (
    FeastRepo,
    OnlineFeatureReader,
    apply,
    feast_connection_string,
    materialize,
    write_sources,
)
from raylane.features._redis import mask_url

ROOT = Path(__file__).resolve().parents[3]
DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_connection_string_from_url():
    assert feast_connection_string("redis://127.0.0.1:6390/0") == "127.0.0.1:6390,db=0"
    assert feast_connection_string("rediss://bob:s3cret@cache.internal:6380/2") == (
        "cache.internal:6380,db=2,username=bob,password=s3cret,ssl=true"
    )
    with pytest.raises(ConfigError, match=r"unix:///tmp/r.sock"):
        feast_connection_string("unix:///tmp/r.sock")
    with pytest.raises(ConfigError, match="contains ','"):
        feast_connection_string("redis://:a,b@h:1/0")


def test_mask_url_hides_the_password():
    assert mask_url("redis://bob:s3cret@h:6379/0") == "redis://bob:***@h:6379/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_repo_config_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://10.1.2.3:7000/4")
    monkeypatch.setenv("RAYLANE_HOME", str(tmp_path / "home"))
    repo = FeastRepo.load(ROOT / "features")
    assert repo.project == "raylane"
    assert repo.registry_path == tmp_path / "home" / "feast" / "raylane.db"
    cfg = repo.repo_config()
    assert cfg.online_store.connection_string == "10.1.2.3:7000,db=4"
    assert cfg.registry.path == str(tmp_path / "home" / "feast" / "raylane.db")
    assert cfg.entity_key_serialization_version == 3
    assert cfg.offline_store.type == "file"
    assert FeastRepo.load(ROOT / "features", project="other").repo_config().project == "other"


def test_missing_repo_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"features.feast_repo"):
        FeastRepo.load(tmp_path / "nope")


def _profiles(naive: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    now = datetime.now(UTC) - timedelta(hours=1)
    ts = now.replace(tzinfo=None) if naive else now
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "risk_score": [0.1, 0.9],
            "avg_amount": [10.0, 20.0],
            "txn_count_30d": [3, 4],
            "account_age_days": [100, 200],
            "event_timestamp": [ts, ts],
            "created": [ts, ts],
            "extra": [1, 2],
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": ["m1"],
            "category_risk": [0.3],
            "fraud_rate_90d": [0.01],
            "event_timestamp": [ts],
            "created": [ts],
        }
    )
    return users, merchants


@pytest.fixture
def repo(tmp_path) -> FeastRepo:
    shutil.copytree(
        ROOT / "features", tmp_path / "repo", ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    return FeastRepo.load(
        tmp_path / "repo",
        project="unit_test",
        redis_url=DEAD,
        registry_path=tmp_path / "registry.db",
    )


def _sources(users: pd.DataFrame, merchants: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"user_profiles": users, "merchant_profiles": merchants}


def test_write_sources_conforms_columns(repo):
    paths = write_sources(_sources(*_profiles(naive=True)), repo)
    users = pd.read_parquet(paths["user_profiles"])
    assert list(users.columns) == [
        "user_id",
        "risk_score",
        "avg_amount",
        "txn_count_30d",
        "account_age_days",
        "event_timestamp",
        "created",
    ]
    assert str(users["event_timestamp"].dt.tz) == "UTC"
    assert users["txn_count_30d"].dtype == np.int64
    assert paths["merchant_profiles"] == repo.path / "data" / "merchant_profiles.parquet"


def test_write_sources_rejects_bad_frames(repo):
    users, merchants = _profiles()
    with pytest.raises(ConfigError, match=r"lacks columns \['fraud_rate_90d'\]"):
        write_sources(_sources(users, merchants.drop(columns=["fraud_rate_90d"])), repo)
    users["txn_count_30d"] = [1.0, np.nan]
    with pytest.raises(ConfigError, match="txn_count_30d cannot be stored as int64"):
        write_sources(_sources(users, merchants), repo)
    with pytest.raises(ConfigError, match=r"has no local parquet FileSource named 'orders'"):
        write_sources({"orders": users}, repo)


def test_materialize_without_redis_is_a_dependency_error(repo):
    write_sources(_sources(*_profiles()), repo)
    apply(repo)
    with pytest.raises(DependencyError, match=r"127.0.0.1:1") as info:
        materialize(repo)
    assert info.value.retriable


def test_materialize_before_apply_names_the_fix(repo):
    with pytest.raises(ConfigError, match="run `raylane bootstrap`"):
        materialize(repo)


def test_fraud_config_views_resolve_and_reads_fail_cleanly(repo):
    """serve_configs/fraud.yaml's online views exist in features/; a dead Redis is retriable."""
    apply(repo)
    views = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1].features.online
    reader = OnlineFeatureReader.from_repo(repo, views)
    assert reader.entity_fields == ["merchant_id", "user_id"]
    assert reader.feature_refs[0] == "user_risk_profile:risk_score"
    with pytest.raises(DependencyError, match=r"127.0.0.1:1"):
        asyncio.run(reader.read({"user_id": ["u1"], "merchant_id": ["m1"]}))
    with pytest.raises(ConfigError, match=r"lacks entity fields \['merchant_id'\]"):
        asyncio.run(reader.read({"user_id": ["u1"]}))
    assert asyncio.run(reader.read({"user_id": [], "merchant_id": []}))[
        "merchant_profile__category_risk"
    ].shape == (0,)


def test_reader_config_errors_name_the_fix(repo):
    apply(repo)
    missing = [OnlineFeatureView(view="user_profile", entity_field="user_id", features=("x",))]
    with pytest.raises(
        ConfigError,
        match="feature view user_profile does not exist in project "
        r"unit_test; run `raylane bootstrap`",
    ):
        OnlineFeatureReader.from_repo(repo, missing)
    typo = [
        OnlineFeatureView(
            view="merchant_profile",
            entity_field="merchant_id",
            features=("category_risk", "chargebacks"),
        )
    ]
    with pytest.raises(ConfigError, match="'chargebacks' is not in feature view merchant_profile"):
        OnlineFeatureReader.from_repo(repo, typo)
    wrong_key = [
        OnlineFeatureView(
            view="merchant_profile", entity_field="user_id", features=("category_risk",)
        )
    ]
    with pytest.raises(ConfigError, match="keyed by"):
        OnlineFeatureReader.from_repo(repo, wrong_key)


def test_materialize_without_sources_names_the_fix(repo):
    apply(repo)
    with pytest.raises(
        ConfigError,
        match=r"source data/user_profiles.parquet of feature view user_risk_profile is missing",
    ):
        materialize(repo)


def test_events_without_an_entity_read_as_missing(repo, monkeypatch):
    """A None entity value never reaches Redis (Feast cannot serialize it): its row is NaN."""
    apply(repo)
    views = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1].features.online
    reader = OnlineFeatureReader.from_repo(repo, views)
    sent: list[int] = []

    async def fake_roundtrip(client, payload, n):
        sent.append(n)
        return [[ValueProto(double_val=0.25).SerializeToString(), None, None, None, None]] * n

    monkeypatch.setattr("raylane.features.online.roundtrip", fake_roundtrip)
    cols = asyncio.run(reader.read({"user_id": [None, "u1", None], "merchant_id": [None] * 3}))
    assert sent == [1]
    assert np.isnan(cols["user_risk_profile__risk_score"][[0, 2]]).all()
    assert cols["user_risk_profile__risk_score"][1] == 0.25
    assert np.isnan(cols["merchant_profile__category_risk"]).all()
