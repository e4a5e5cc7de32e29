"""The simulated world: deterministic per seed, contract-shaped events, learnable fraud."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from raylane.testing import CONTRACT_FIELDS, World, events_frame, to_ms

END = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, n_users=300, n_merchants=60)


@pytest.fixture(scope="module")
def history(world: World) -> list:
    return world.history(END, hours=0.5, fraud_rate=0.03)


def test_same_seed_same_world_and_events(world: World, history: list) -> None:
    again = World(seed=5, n_users=300, n_merchants=60)
    assert again.history(END, hours=0.5, fraud_rate=0.03) == history
    pd.testing.assert_frame_equal(again.user_profiles(END), world.user_profiles(END))
    pd.testing.assert_frame_equal(again.merchant_profiles(END), world.merchant_profiles(END))


def test_other_seed_or_start_differs(world: World, history: list) -> None:
    other = World(seed=6, n_users=300, n_merchants=60).history(END, hours=0.5, fraud_rate=0.03)
    assert [e.event["event_id"] for e in other[:50]] != [e.event["event_id"] for e in history[:50]]
    a = world.stream(start=to_ms(END)).take(20)
    b = world.stream(start=to_ms(END) + 1).take(20)
    assert {e.event["event_id"] for e in a}.isdisjoint(e.event["event_id"] for e in b)


def test_events_carry_exactly_the_contract_fields(history: list) -> None:
    for le in history:
        ev = le.event
        assert tuple(ev) == CONTRACT_FIELDS
        assert uuid.UUID(ev["event_id"]).version == 4
        assert isinstance(ev["correlation_id"], str) and ev["correlation_id"]
        assert isinstance(ev["amount"], float) and ev["amount"] > 0
        assert isinstance(ev["event_time"], int)
        assert ev["currency"] in {"EUR", "USD", "GBP"}
        assert len(ev["user_history_hash"]) == 40
        assert isinstance(le.is_fraud, bool)
    assert len({le.event["event_id"] for le in history}) == len(history)


def test_history_is_ordered_within_its_window(history: list) -> None:
    traffic = [le for le in history if le.kind != "prior"]
    prior = [le for le in history if le.kind == "prior"]
    times = [le.event["event_time"] for le in traffic]
    assert times == sorted(times)
    assert to_ms(END) - 1_800_000 <= times[0] and times[-1] < to_ms(END)
    assert prior and all(le.event["event_time"] < times[0] and not le.is_fraud for le in prior)


def test_stream_spacing_follows_rate(world: World) -> None:
    s = world.stream(start=1_000_000, rate=50.0)
    times = [le.event["event_time"] for le in s.take(200)]
    assert times == [1_000_000 + int(k * 20.0) for k in range(200)]
    assert s.next_time_ms == 1_000_000 + 200 * 20 and s.emitted == 200


def test_fraud_comes_in_velocity_bursts(history: list) -> None:
    df = events_frame(history)
    traffic = df[df.kind != "prior"]
    assert 0.015 < traffic.is_fraud.mean() < 0.06
    bursts = traffic[traffic.kind == "burst"]
    assert len(bursts) > 20
    # Each compromised user's burst: >= 4 payments within ~30 s, mostly at new merchants.
    by_user: dict[str, list[int]] = defaultdict(list)
    for user, t in zip(bursts.user_id, bursts.event_time, strict=True):
        by_user[user].append(t)
    dense = [
        u
        for u, ts in by_user.items()
        if any(sum(1 for x in ts if t0 <= x <= t0 + 35_000) >= 4 for t0 in ts)
    ]
    assert len(dense) >= len(by_user) // 2
    legit = traffic[~traffic.is_fraud]
    profiles = World(seed=5, n_users=300, n_merchants=60).user_profiles(END).set_index("user_id")

    def ratio(d):
        return (d.amount / d.user_id.map(profiles.avg_amount)).median()

    assert ratio(traffic[traffic.is_fraud]) > 2.5 * ratio(legit)


def test_injected_burst(world: World) -> None:
    s = world.stream(start=0, rate=20.0, fraud_rate=0.0)
    s.take(10)
    victim = s.inject_burst(user_id="u00042", n=6)
    assert victim == "u00042"
    out = s.until(60_000)
    burst = [le for le in out if le.is_fraud]
    assert len(burst) == 6 and all(le.event["user_id"] == "u00042" for le in burst)
    ts = [le.event["event_time"] for le in burst]
    assert ts[-1] - ts[0] <= 31_000
    assert not any(le.is_fraud for le in world.stream(start=0, fraud_rate=0.0).take(2000))
    quick = world.stream(start=0, rate=200.0, fraud_rate=0.0)
    users = [quick.inject_burst(n=8, within_s=2.0) for _ in range(3)]
    got = [le for le in quick.take(1000) if le.is_fraud]
    assert len(got) == 24 and {le.event["user_id"] for le in got} == set(users)
    assert max(le.event["event_time"] for le in got) <= 2_200
    with pytest.raises(ValueError, match="within_s"):
        quick.inject_burst(within_s=120)


def test_smaller_world_is_a_prefix_of_a_bigger_one(world: World) -> None:
    big = World(seed=5, n_users=1500, n_merchants=60)
    pd.testing.assert_frame_equal(big.user_profiles(END).iloc[:300], world.user_profiles(END))
    pd.testing.assert_frame_equal(big.merchant_profiles(END), world.merchant_profiles(END))
    assert big.user_merchants[:300] == world.user_merchants


def test_profile_tables_columns_and_dtypes(world: World) -> None:
    u = world.user_profiles(END)
    assert list(u.columns) == [
        "user_id",
        "risk_score",
        "avg_amount",
        "txn_count_30d",
        "account_age_days",
        "event_timestamp",
        "created",
    ]
    assert len(u) == 300 and u.user_id.is_unique and isinstance(u.user_id[0], str)
    assert u.risk_score.dtype == np.float64 and u.avg_amount.dtype == np.float64
    assert u.txn_count_30d.dtype == np.int64 and u.account_age_days.dtype == np.int64
    assert str(u.event_timestamp.dtype) == "datetime64[ns, UTC]"
    assert u.event_timestamp[0] == pd.Timestamp(END)
    m = world.merchant_profiles(END)
    assert list(m.columns) == [
        "merchant_id",
        "category_risk",
        "fraud_rate_90d",
        "event_timestamp",
        "created",
    ]
    assert m.category_risk.dtype == np.float64 and m.fraud_rate_90d.dtype == np.float64
    assert m.category_risk.between(0, 1).all() and str(m.created.dtype) == "datetime64[ns, UTC]"
    assert set(world.merchant_category) >= {"grocery", "crypto", "gift_cards"}


def test_unknown_user_is_rejected(world: World) -> None:
    with pytest.raises(KeyError, match="not a user of this world"):
        world.stream(start=0).inject_burst(user_id="u99999")


def test_activity_events_follow_the_churn_contract(world: World) -> None:
    from raylane.testing import ACTIVITY_FIELDS, churn_traits

    hist = world.activity_history(END, hours=0.2)
    assert hist == world.activity_history(END, hours=0.2)
    assert all(tuple(le.event) == ACTIVITY_FIELDS for le in hist)
    ev = hist[0].event
    assert isinstance(ev["session_minutes"], float) and isinstance(ev["pages_viewed"], int)
    assert isinstance(ev["days_since_last_login"], float) and ev["plan"] in {"free", "basic", "pro"}
    df = events_frame(hist)
    assert set(df.kind) == {"churn", "retained"} and 0.05 < df.is_fraud.mean() < 0.4
    churners = df[df.is_fraud]
    assert churners.session_minutes.median() < df[~df.is_fraud].session_minutes.median()
    traits = churn_traits(world)
    idx = [world.user_index(u) for u in df.user_id]
    assert (traits["churn"][idx] == df.is_fraud.to_numpy()).all()
    assert all(le.label == le.is_fraud for le in hist[:10])
