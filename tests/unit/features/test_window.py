"""Window feature semantics (ReferenceWindowState), RedisWindowStore input checks; no services."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from raylane.config import WindowFeature
from raylane.errors import ContractError, DependencyError
from raylane.features import (
    LATENESS_S,
    RedisWindowStore,
    ReferenceWindowState,
    reference_window_features,
    window_key,
)

T0 = 1_700_000_000_000
COUNT = WindowFeature(name="cnt", kind="count", key_fields=("user_id",), window_s=60)
SUM = WindowFeature(
    name="amt", kind="sum", key_fields=("user_id",), value_field="amount", window_s=60
)
FIRST = WindowFeature(name="first", kind="first_seen", key_fields=("user_id", "merchant_id"))
SPECS = [COUNT, SUM, FIRST]


def ev(eid: str, t: int, user: str = "u1", merchant: str = "m1", amount: float = 1.0) -> dict:
    return {
        "event_id": eid,
        "event_time": t,
        "user_id": user,
        "merchant_id": merchant,
        "amount": amount,
    }


def run(state: ReferenceWindowState, *events: dict) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in state.update_and_read(list(events)).items()}


def test_window_key_joins_key_fields():
    assert window_key(FIRST, ev("e", T0, "u7", "m3")) == "u7|m3"


def test_event_exactly_window_old_is_excluded():
    out = run(
        ReferenceWindowState([COUNT, SUM]),
        ev("a", T0, amount=5.0),
        ev("b", T0 + 60_000, amount=2.0),
    )
    assert out["cnt"] == [1.0, 1.0]
    assert out["amt"] == [5.0, 2.0]


def test_event_just_inside_window_is_included():
    out = run(
        ReferenceWindowState([COUNT, SUM]),
        ev("a", T0, amount=5.0),
        ev("b", T0 + 59_999, amount=2.0),
    )
    assert out["cnt"] == [1.0, 2.0]
    assert out["amt"] == [5.0, 7.0]


def test_current_event_is_counted_and_keys_are_separate():
    out = run(ReferenceWindowState([COUNT]), ev("a", T0), ev("b", T0, user="u2"), ev("c", T0 + 1))
    assert out["cnt"] == [1.0, 1.0, 2.0]


def test_reprocessing_an_event_is_idempotent():
    state = ReferenceWindowState(SPECS)
    first = run(state, ev("a", T0, amount=3.0), ev("b", T0 + 10, amount=4.0))
    again = run(state, ev("a", T0, amount=3.0), ev("b", T0 + 10, amount=4.0))
    assert first == {"cnt": [1.0, 2.0], "amt": [3.0, 7.0], "first": [1.0, 0.0]}
    assert again == {"cnt": [1.0, 2.0], "amt": [3.0, 7.0], "first": [1.0, 0.0]}


def test_out_of_order_within_lateness_is_exact():
    state = ReferenceWindowState([COUNT])
    # b (t+30 s) arrives before a (t): a must not count b, a later event counts both.
    out = run(state, ev("b", T0 + 30_000), ev("a", T0), ev("c", T0 + 40_000))
    assert out["cnt"] == [1.0, 1.0, 3.0]
    # an event 240 s behind the newest one (within LATENESS_S) still sees its window exactly
    out = run(state, ev("now", T0 + 250_000), ev("late", T0 + 10_000))
    assert out["cnt"] == [1.0, 2.0]


def test_first_seen_per_key_and_on_reprocessing():
    state = ReferenceWindowState([FIRST])
    out = run(
        state,
        ev("a", T0),
        ev("b", T0 + 1),
        ev("c", T0 + 2, merchant="m2"),
        ev("a", T0),
        ev("d", T0 - 5000),
    )
    assert out["first"] == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_trimming_drops_state_older_than_window_plus_lateness():
    state = ReferenceWindowState([COUNT])
    horizon_ms = int((COUNT.window_s + LATENESS_S) * 1000)
    run(state, ev("old", T0), ev("keep", T0 + 1000))
    # an event exactly window+lateness after `old` trims it (ts <= t - window - lateness)
    run(state, ev("now", T0 + horizon_ms))
    assert set(state._events["cnt"]["u1"]) == {"keep", "now"}
    # a very late event inside `old`'s window no longer sees it: exactness is only promised
    # within LATENESS_S
    assert run(state, ev("very_late", T0 + 2000))["cnt"] == [2.0]


def test_reference_window_features_starts_empty():
    events = [ev("a", T0, amount=1.5), ev("b", T0 + 1, amount=2.5)]
    cols = reference_window_features(events, SPECS)
    assert cols["amt"].dtype == np.float64
    assert cols["amt"].tolist() == [1.5, 4.0]


# -- RedisWindowStore checks that need no server ------------------------------------------


def _offline_store() -> RedisWindowStore:
    # Port 1 is never a Redis: any accidental network use fails loudly.
    return RedisWindowStore(aioredis.Redis(host="127.0.0.1", port=1), "unit", SPECS)


def test_empty_batch_needs_no_round_trip():
    out = asyncio.run(_offline_store().update_and_read([]))
    assert {k: v.shape for k, v in out.items()} == {"cnt": (0,), "amt": (0,), "first": (0,)}


def test_missing_field_is_a_contract_error():
    bad = {"event_id": "x", "event_time": T0, "user_id": "u1", "amount": 1.0}
    with pytest.raises(ContractError, match="lacks field 'merchant_id'"):
        asyncio.run(_offline_store().update_and_read([bad]))


def test_non_finite_sum_value_is_a_contract_error():
    with pytest.raises(ContractError, match="finite"):
        asyncio.run(_offline_store().update_and_read([ev("x", T0, amount=float("nan"))]))


def test_redis_down_is_a_retriable_dependency_error():
    with pytest.raises(DependencyError, match=r"127.0.0.1:1") as info:
        asyncio.run(_offline_store().update_and_read([ev("x", T0)]))
    assert info.value.retriable and info.value.stage == "features"
