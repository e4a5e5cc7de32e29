"""RedisWindowStore against a real Redis: equals the reference, atomic per batch, one round trip."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import redis.asyncio as aioredis

from raylane.config import WindowFeature
from raylane.features import LATENESS_S, RedisWindowStore, ReferenceWindowState, _redis_window

# Fixtures run in the session loop (pyproject: asyncio_default_fixture_loop_scope), so tests do too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = 1_700_000_000_000
SPECS = [
    WindowFeature(name="user_txn_count_60s", kind="count", key_fields=("user_id",), window_s=60),
    WindowFeature(
        name="user_amount_sum_60s",
        kind="sum",
        key_fields=("user_id",),
        value_field="amount",
        window_s=60,
    ),
    WindowFeature(
        name="user_merchant_first_seen",
        kind="first_seen",
        key_fields=("user_id", "merchant_id"),
        retention_s=3600,
    ),
    WindowFeature(
        name="merchant_txn_count_10s", kind="count", key_fields=("merchant_id",), window_s=10
    ),
]


class CountingConnection(aioredis.Connection):
    """Counts writes to the socket: one per network round trip of a request/reply batch."""

    sends = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


def stream(n: int, seed: int, *, users: int = 12) -> list[dict]:
    """Payments with ~10 % re-deliveries and event times up to 400 s out of order."""
    rng = random.Random(seed)
    events: list[dict] = []
    for i in range(n):
        if events and rng.random() < 0.1:
            events.append(dict(rng.choice(events)))  # at-least-once re-delivery
            continue
        late = rng.choice([0, 0, 0, rng.randint(0, 60_000), rng.randint(0, 400_000)])
        events.append(
            {
                "event_id": f"e{seed}-{i}",
                "event_time": T0 + i * 700 - late,
                "user_id": f"u{rng.randrange(users)}",
                "merchant_id": f"m{rng.randrange(5)}",
                "amount": round(rng.uniform(0.5, 900.0), 2),
            }
        )
    return events


def assert_columns_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, expected in want.items():
        if "sum" in name:  # summed in event-time order in Lua, in arrival order in Python
            np.testing.assert_allclose(got[name], expected, rtol=1e-12, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], expected, err_msg=name)


@pytest.fixture
async def client(redis_url):
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def store(client, unique):
    s = RedisWindowStore(client, f"test-{unique}", SPECS)
    yield s
    await s.clear()


async def test_equals_reference_on_a_messy_stream(store):
    ref = ReferenceWindowState(SPECS)
    events = stream(3000, seed=1)
    rng = random.Random(2)
    i = 0
    while i < len(events):
        size = rng.choice([1, 3, 50, 200, 500])
        batch = events[i : i + size]
        assert_columns_equal(await store.update_and_read(batch), ref.update_and_read(batch))
        i += size
    # replaying the whole history changes nothing it reports for events already seen
    again = await store.update_and_read(events[-300:])
    assert_columns_equal(again, ref.update_and_read(events[-300:]))


async def test_incremental_sum_survives_cancellation(store):
    """A hot key's window sum moves incrementally within a batch; a huge value leaving it must
    not leave rounding garbage behind (compensated summation)."""
    events = [
        {
            "event_id": f"e{i}",
            "event_time": T0 + dt,
            "user_id": "hot",
            "merchant_id": "m",
            "amount": amount,
        }
        for i, (dt, amount) in enumerate(
            [(0, 1e12), (1000, 0.01), (30_000, 0.07), (60_500, 0.02), (60_600, 0.3), (59_000, 0.5)]
        )
    ]
    got = (await store.update_and_read(events))["user_amount_sum_60s"]
    want = ReferenceWindowState(SPECS).update_and_read(events)["user_amount_sum_60s"]
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)
    assert got[3] == pytest.approx(0.1, abs=1e-15)  # 0.01 + 0.07 + 0.02, 1e12 has left


async def test_backfill_then_live_equals_reference(store):
    history, live = stream(2500, seed=3)[:2000], stream(2500, seed=3)[2000:]
    assert await store.backfill(history, batch_size=333) == 2000
    ref = ReferenceWindowState(SPECS)
    ref.update_and_read(history)
    assert_columns_equal(await store.update_and_read(live), ref.update_and_read(live))


async def test_keys_are_namespaced_and_expire(store, client, unique):
    await store.update_and_read(
        [{"event_id": "a", "event_time": T0, "user_id": "u1", "merchant_id": "m1", "amount": 2.5}]
    )
    ns = f"raylane:test-{unique}:win:"
    keys = sorted([k.decode() async for k in client.scan_iter(match=ns + "*")])
    assert keys == [
        ns + "merchant_txn_count_10s:m1",
        ns + "user_amount_sum_60s:u1",
        ns + "user_merchant_first_seen:u1|m1",
        ns + "user_txn_count_60s:u1",
    ]
    assert 0 < await client.ttl(ns + "user_txn_count_60s:u1") <= 60 + LATENESS_S
    assert 0 < await client.ttl(ns + "merchant_txn_count_10s:m1") <= 10 + LATENESS_S
    assert 60 + LATENESS_S < await client.ttl(ns + "user_merchant_first_seen:u1|m1") <= 3600
    assert await client.get(ns + "user_merchant_first_seen:u1|m1") == b"a"


async def test_two_writers_on_one_user_stay_exact(redis_url, unique):
    """Two replicas (own clients) hammer one user; every event lands exactly once."""
    n = 600
    events = [
        {
            "event_id": f"e{i}",
            "event_time": T0,
            "user_id": "hot",
            "merchant_id": f"m{i % 7}",
            "amount": 1.0 + i % 10,
        }
        for i in range(n)
    ]
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    stores = [RedisWindowStore(c, f"test-{unique}", SPECS) for c in clients]

    async def writer(w: int) -> list[float]:
        counts: list[float] = []
        mine = events[w::2]
        for i in range(0, len(mine), 20):
            counts += (await stores[w].update_and_read(mine[i : i + 20]))[
                "user_txn_count_60s"
            ].tolist()
            await asyncio.sleep(0)
        return counts

    try:
        per_writer = await asyncio.gather(writer(0), writer(1))
        # all n events share one window (same event time, each in every other's window):
        # the i-th event applied, whichever writer applied it, sees count i
        assert sorted(per_writer[0] + per_writer[1]) == [float(i) for i in range(1, n + 1)]
        w0, w1 = per_writer
        assert max(w0) > min(w1) and max(w1) > min(w0), "the writers never interleaved"
        zkey = f"raylane:test-{unique}:win:user_txn_count_60s:hot"
        members = await clients[0].zrange(zkey, 0, -1)
        assert sorted(members) == sorted(e["event_id"].encode() for e in events)
        last = await stores[0].update_and_read([events[-1]])  # a replay: nothing added
        assert last["user_txn_count_60s"].tolist() == [float(n)]
        assert last["user_amount_sum_60s"].tolist() == [sum(e["amount"] for e in events)]
    finally:
        await stores[0].clear()
        for c in clients:
            await c.aclose()


async def test_one_round_trip_per_batch(redis_url, unique, monkeypatch):
    client = aioredis.Redis.from_url(redis_url, connection_class=CountingConnection)
    s = RedisWindowStore(client, f"test-{unique}", SPECS)
    try:
        batch = stream(500, seed=4)
        await s.update_and_read(batch[:10])  # connects, loads the script if needed
        CountingConnection.sends = 0
        await s.update_and_read(batch)
        assert CountingConnection.sends == 1
        # NOSCRIPT fallback: an unknown SHA costs one EVAL, and the result is still right
        monkeypatch.setattr(_redis_window, "_SHA", b"0" * 40)
        CountingConnection.sends = 0
        ref = ReferenceWindowState(SPECS)
        ref.update_and_read(batch)
        assert_columns_equal(await s.update_and_read(batch[-5:]), ref.update_and_read(batch[-5:]))
        assert CountingConnection.sends == 2
    finally:
        await s.clear()
        await client.aclose()


async def test_forget_removes_only_the_keys_of_the_given_events(store):
    def pay(i: int, user: str, merchant: str) -> dict:
        return {
            "event_id": f"f{i}",
            "event_time": T0 + i * 1000,
            "user_id": user,
            "merchant_id": merchant,
            "amount": 10.0,
        }

    seen = [pay(0, "ua", "m1"), pay(1, "ua", "m2"), pay(2, "ub", "m1")]
    await store.update_and_read(seen)
    # ua's count and sum, ua|m1 and m1's count go; ua|m2 and ub's count and sum stay
    assert await store.forget([pay(9, "ua", "m1")]) == 4
    got = await store.update_and_read([pay(3, "ua", "m1"), pay(4, "ua", "m2"), pay(5, "ub", "m1")])
    assert got["user_merchant_first_seen"].tolist() == [1.0, 0.0, 0.0]
    assert got["user_txn_count_60s"].tolist() == [1.0, 2.0, 2.0]
    assert got["merchant_txn_count_10s"].tolist() == [1.0, 2.0, 2.0]  # m1 starts again at f3
    assert await store.forget([]) == 0
    assert await store.forget([{"event_id": "x", "user_id": "nobody"}]) == 0
