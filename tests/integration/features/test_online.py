"""OnlineFeatureReader against Feast on a real Redis: Feast's values, in one round trip."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis

from raylane.config import OnlineFeatureView, load_serve_config
from raylane.features import (
    FeastRepo,
    OnlineFeatureReader,
    apply,
    materialize,
    teardown,
    write_sources,
)
from raylane.features._redis import roundtrip

pytestmark = pytest.mark.integration
# Async fixtures run in the session loop (pyproject: asyncio_default_fixture_loop_scope), so
# async tests do too.
session_loop = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[3]
VIEWS = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1].features.online
N_USERS, N_MERCHANTS = 300, 40


class CountingConnection(aioredis.Connection):
    """Counts writes to the socket: one per network round trip of a request/reply batch."""

    sends = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


def profiles(now: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    ts = pd.Series([now - timedelta(hours=2)] * N_USERS, dtype="datetime64[ns, UTC]")
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(N_USERS)],
            "risk_score": rng.random(N_USERS),
            "avg_amount": rng.lognormal(3, 1, N_USERS),
            "txn_count_30d": rng.integers(0, 90, N_USERS),
            "account_age_days": rng.integers(0, 4000, N_USERS),
            "event_timestamp": ts,
            "created": ts,
        }
    )
    mts = ts[:N_MERCHANTS]
    merchants = pd.DataFrame(
        {
            "merchant_id": [f"m{i}" for i in range(N_MERCHANTS)],
            "category_risk": rng.random(N_MERCHANTS),
            "fraud_rate_90d": rng.random(N_MERCHANTS) / 100,
            "event_timestamp": mts,
            "created": mts,
        }
    )
    return users, merchants


@pytest.fixture(scope="module")
def repo(redis_url, tmp_path_factory):
    """A private copy of features/ with its own project, applied and materialized."""
    tmp = tmp_path_factory.mktemp("feast")
    shutil.copytree(
        ROOT / "features", tmp / "repo", ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    project = f"rltest_{tmp.name.replace('-', '_')}"[:60]
    r = FeastRepo.load(
        tmp / "repo", project=project, redis_url=redis_url, registry_path=tmp / "registry.db"
    )
    users, merchants = profiles(datetime.now(UTC))
    write_sources({"user_profiles": users, "merchant_profiles": merchants}, r)
    apply(r)
    materialize(r)
    yield r
    teardown(r)
    sync = redis.Redis.from_url(redis_url)
    leftover = list(sync.scan_iter(match=b"*" + project.encode(), count=1000))
    sync.close()
    assert leftover == [], "feast teardown left keys of the test project behind"


def batch(size: int, seed: int) -> dict[str, list[str]]:
    """Entities with repeats and some ids Feast has never seen."""
    rng = np.random.default_rng(seed)
    return {
        "user_id": [f"u{i}" for i in rng.integers(0, N_USERS + 30, size)],
        "merchant_id": [f"m{i}" for i in rng.integers(0, N_MERCHANTS + 5, size)],
    }


@session_loop
async def test_reader_matches_feast(repo):
    reader = OnlineFeatureReader.from_repo(repo, VIEWS)
    store = repo.store()
    try:
        for size, seed in [(1, 0), (7, 1), (300, 2)]:
            ents = batch(size, seed)
            ents["user_id"][0] = "never-seen"
            want = store.get_online_features(
                features=reader.feature_refs,
                entity_rows=reader.entity_rows(ents),
                full_feature_names=True,
            ).to_dict()
            assert await reader.read_feast_dict(ents) == want
            cols = await reader.read(ents)
            assert sorted(cols) == sorted(c for v in VIEWS for c in v.columns())
            for name, col in cols.items():
                expected = np.array([math.nan if x is None else x for x in want[name]], dtype=float)
                assert col.dtype == np.float64 and col.shape == (size,)
                np.testing.assert_array_equal(col, expected, err_msg=name)
            assert all(math.isnan(cols[c][0]) for c in VIEWS[0].columns())
    finally:
        await reader.aclose()


@session_loop
async def test_views_on_one_entity_share_one_hmget(repo, monkeypatch):
    """View configs on the user entity read Feast's one hash per user with a single HMGET."""
    views = [
        OnlineFeatureView(
            view="user_risk_profile",
            entity_field="user_id",
            features=("txn_count_30d", "risk_score"),
        ),
        OnlineFeatureView(
            view="merchant_profile", entity_field="merchant_id", features=("fraud_rate_90d",)
        ),
        OnlineFeatureView(
            view="user_risk_profile", entity_field="user_id", features=("account_age_days",)
        ),
    ]
    reader = OnlineFeatureReader.from_repo(repo, views)
    commands: list[int] = []

    async def counting_roundtrip(client, payload, n):  # type: ignore[no-untyped-def]
        commands.append(n)
        return await roundtrip(client, payload, n)

    monkeypatch.setattr("raylane.features.online.roundtrip", counting_roundtrip)
    try:
        ents = batch(50, 3)
        want = (
            repo.store()
            .get_online_features(
                features=reader.feature_refs,
                entity_rows=reader.entity_rows(ents),
                full_feature_names=True,
            )
            .to_dict()
        )
        assert await reader.read_feast_dict(ents) == want
        cols = await reader.read(ents)
        expected = [
            math.nan if x is None else x for x in want["user_risk_profile__account_age_days"]
        ]
        np.testing.assert_array_equal(cols["user_risk_profile__account_age_days"], expected)
        assert commands == [len(set(ents["user_id"])) + len(set(ents["merchant_id"]))] * 2
    finally:
        await reader.aclose()


@session_loop
async def test_one_round_trip_per_batch(repo):
    client = aioredis.Redis.from_url(repo.redis_url, connection_class=CountingConnection)
    reader = OnlineFeatureReader.from_repo(repo, VIEWS, client)
    try:
        await reader.read(batch(3, 0))  # connection setup (HELLO / CLIENT SETINFO) happens here
        for size in (1, 500):
            CountingConnection.sends = 0
            await reader.read(batch(size, size))
            assert CountingConnection.sends == 1
    finally:
        await reader.aclose()
        await client.aclose()


@session_loop
async def test_ttl_is_not_enforced_unless_asked(repo):
    """Feast 0.67's Redis store returns rows whatever their age; enforce_ttl=True drops them."""
    store = repo.store()
    old = datetime.now(UTC) - timedelta(days=400)  # user_risk_profile ttl: 365 days
    store.write_to_online_store(
        "user_risk_profile",
        pd.DataFrame(
            {
                "user_id": ["stale"],
                "risk_score": [0.5],
                "avg_amount": [10.0],
                "txn_count_30d": [1],
                "account_age_days": [2],
                "event_timestamp": [old],
                "created": [old],
            }
        ),
    )
    ents = {"user_id": ["stale"], "merchant_id": ["m0"]}
    want = store.get_online_features(
        features=["user_risk_profile:risk_score"],
        entity_rows=[{"user_id": "stale"}],
        full_feature_names=True,
    ).to_dict()
    assert want["user_risk_profile__risk_score"] == [0.5]
    lenient = OnlineFeatureReader.from_repo(repo, VIEWS)
    strict = OnlineFeatureReader.from_repo(repo, VIEWS, enforce_ttl=True)
    try:
        assert (await lenient.read(ents))["user_risk_profile__risk_score"].tolist() == [0.5]
        got = await strict.read(ents)
        assert math.isnan(got["user_risk_profile__risk_score"][0])
        assert not math.isnan(got["merchant_profile__category_risk"][0])
    finally:
        await lenient.aclose()
        await strict.aclose()
