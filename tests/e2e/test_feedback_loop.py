"""The feedback loop on the Ray Serve app: a flagged payment raises the user's risk profile.

The fraud app runs from serve_configs/fraud.yaml (isolated topics) with its action runner
and drift monitor deployments. A fraud burst gets flagged; the runner's update_profile
raises the user's ``risk_score`` in the Feast online store and its publish handler emits
payments.blocked; the user's next payment is scored with the raised profile.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from raylane.config import OnlineFeatureView
from raylane.contracts import Codec
from raylane.features import FeastRepo, OnlineFeatureReader
from raylane.kafka.producer import EventProducer
from raylane.settings import Settings
from raylane.testing import World
from raylane.testing.kafka import collect

from .windows import forget

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FEATURE = "user_risk_profile__risk_score"


def _world() -> World:
    meta = json.loads((Settings.load().home / "world-fraud.json").read_text())
    return World(seed=meta["seed"], n_users=meta["users"])


async def _risk(user: str) -> float:
    s = Settings.load()
    reader = OnlineFeatureReader.from_repo(
        FeastRepo.load("features", redis_url=s.redis_url),
        [
            OnlineFeatureView(
                view="user_risk_profile", entity_field="user_id", features=("risk_score",)
            )
        ],
    )
    try:
        return float((await reader.read({"user_id": [user]}))[FEATURE][0])
    finally:
        await reader.aclose()


ROUNDS = 4


def _bursts(
    exclude: set[str], start_ms: int | None, seed: int
) -> tuple[list[str], list[dict[str, Any]], int]:
    """Three 10-payment, 4 s bursts from three victims not in `exclude`, 5 s apart, from
    `start_ms` (default now); returns the victims, the burst payments and where the next
    round may start."""
    while True:
        stream = _world().stream(start=start_ms, rate=10.0, fraud_rate=0.0, seed=seed)
        victims: list[str] = []
        while len(victims) < 3:
            u = stream.inject_burst(n=10, within_s=4, at_ms=stream.start_ms + 5_000 * len(victims))
            if u in victims or u in exclude:
                break
            victims.append(u)
        if len(victims) == 3:
            break
        start_ms = stream.start_ms + 1  # a victim drawn twice: the next slot, other draws
    burst = [le.event for le in stream.take(300) if le.kind == "burst"]
    assert len(burst) == 30 and {e["user_id"] for e in burst} == set(victims)
    return victims, burst, stream.start_ms + 30_000


async def test_flagged_payment_raises_the_profile_the_next_payment_is_scored_with(
    fraud_app,
) -> None:
    running, args = fraud_app
    s = Settings.load()
    scored_t, flagged_t = (
        args["outputs"]["scored"]["topic"],
        args["decision"]["rules"][0]["publish"]["topic"],
    )
    handlers = args["actions"]["topics"][0]["handlers"]
    blocked_t = next(h["output"]["topic"] for h in handlers if h["type"] == "publish")
    increase = next(h["increase"] for h in handlers if h["type"] == "update_profile")
    flag_rule = args["decision"]["rules"][0]["name"]  # the rule that publishes to flagged_t
    codec = Codec.for_contract("payments.initiated")
    scored_c, flagged_c = (
        Codec.for_contract("payments.scored"),
        Codec.for_contract("payments.flagged"),
    )

    # Rounds of three bursts from three new victims, 5 s apart, until one is flagged: the
    # model catches a 4 s burst most of the time, not always (see test_fraud_pipeline.py), and
    # this test is about what happens after a flag. Up to ROUNDS rounds (12 victims): a run
    # fails only if the model misses every one of them.
    victims: list[str] = []
    burst: list[dict[str, Any]] = []
    before: dict[str, float] = {}
    flagged: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    start_ms = None
    for rnd in range(ROUNDS):
        new, events, start_ms = _bursts(set(victims), start_ms, seed=23 + rnd)
        # The app keeps the pipeline's name and so its window state, which earlier modules'
        # traffic also wrote: a victim may already "know" a burst merchant (first_seen 0) or
        # have payments in the last minute. Each burst starts from the state a real one
        # finds: merchants new to the victim, nothing in the last minute.
        print(f"round {rnd}: window keys reset before the burst: {await forget(args, events)}")
        before |= {u: await _risk(u) for u in new}
        async with EventProducer(
            s.kafka_bootstrap, args["input"]["topic"], codec, key_field=args["input"]["key_field"]
        ) as prod:
            await prod.send_many(events)
        victims += new
        burst += events
        ids = {e["event_id"] for e in burst}

        def burst_scored(got: dict[str, list[Any]], ids: set[str] = ids) -> bool:
            mine = [scored_c.decode(m.value) for m in got[scored_t]]
            mine = [e for e in mine if e["event_id"] in ids]
            # and every flag among them read back from the flagged topic too: it is written
            # by the same batch, but read here apart from the scored topic, so it can lag
            published = {flagged_c.decode(m.value)["event_id"] for m in got[flagged_t]}
            return len(mine) == len(ids) and all(
                e["event_id"] in published for e in mine if e["rule"] == flag_rule
            )

        got = await collect(s.kafka_bootstrap, [scored_t, flagged_t], burst_scored, 120)
        assert burst_scored(got), "every burst payment should have been scored"
        flagged = [flagged_c.decode(m.value) for m in got[flagged_t]]
        flagged = [f for f in flagged if f["event_id"] in ids]
        seen = [scored_c.decode(m.value) for m in got[scored_t]]
        if flagged:
            break
    assert flagged, f"no burst of {victims} was flagged (see tests/e2e/test_fraud_pipeline.py)"
    for e in seen:
        if e["event_id"] in ids:
            assert e["features"][FEATURE] == pytest.approx(before[e["user_id"]])

    n_flagged = {u: sum(f["user_id"] == u for f in flagged) for u in victims}
    expected = {u: min(1.0, before[u] + increase * n_flagged[u]) for u in victims}
    print(f"flagged per victim: {n_flagged}")

    async def risks() -> dict[str, float]:
        return {u: await _risk(u) for u in victims}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and await risks() != pytest.approx(expected):
        await asyncio.sleep(0.5)
    assert await risks() == pytest.approx(expected), (before, n_flagged)

    user = max(victims, key=lambda u: n_flagged[u])
    burst = [e for e in burst if e["user_id"] == user]
    before, expected = before[user], expected[user]

    # the user's next payment is scored with the raised profile
    nxt = dict(
        burst[-1],
        event_id=f"next-{user}-{time.time_ns()}",
        correlation_id=f"corr-next-{user}",
        event_time=burst[-1]["event_time"] + 5_000,
        amount=12.5,
    )
    async with EventProducer(
        s.kafka_bootstrap, args["input"]["topic"], codec, key_field=args["input"]["key_field"]
    ) as prod:
        await prod.send_many([nxt])

    def next_scored(got: dict[str, list[Any]]) -> bool:
        return any(scored_c.decode(m.value)["event_id"] == nxt["event_id"] for m in got[scored_t])

    got = await collect(s.kafka_bootstrap, [scored_t, blocked_t], next_scored, 120)
    second = next(
        e
        for e in (scored_c.decode(m.value) for m in got[scored_t])
        if e["event_id"] == nxt["event_id"]
    )
    assert second["features"][FEATURE] == pytest.approx(expected) != pytest.approx(before)
    assert second["correlation_id"] == nxt["correlation_id"]

    blocked = [Codec.for_contract("payments.blocked").decode(m.value) for m in got[blocked_t]]
    by_id = {f["event_id"]: f["correlation_id"] for f in flagged}
    assert {b["event_id"]: b["correlation_id"] for b in blocked if b["event_id"] in by_id} == by_id
    from ray import serve

    runner = serve.get_deployment_handle(f"{args['name']}-actions", app_name=running.app_name)
    # update_profile + publish, once per flagged event: the burst's, and the next payment's
    # if its raised profile got it flagged too (the runner may still be acting on it)
    want = 2 * (len(flagged) + (second["decision"] == "flagged"))
    stats = await runner.stats.remote()
    deadline = time.monotonic() + 60
    while stats["done"] < want and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        stats = await runner.stats.remote()
    assert stats["running"] and stats["failed"] == 0
    assert stats["done"] == want
