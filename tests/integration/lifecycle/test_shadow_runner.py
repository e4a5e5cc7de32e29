"""Shadow isolation on the real broker and Redis (no Ray): a slow shadow and a failing one
leave the primary's outputs identical; their timeouts and errors are counted; a good shadow's
comparisons reach fraud.shadow and the rolling aggregates in Redis."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from raylane.bootstrap import pipeline_topics
from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.ingest import build_ingress
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.lifecycle.shadow_stats import ShadowStore
from raylane.pipeline.processor import Prediction
from raylane.testing import World
from raylane.testing.kafka import read_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[3]
N = 300


def _cfg(unique: str, tag: str, shadows: list[dict[str, Any]]) -> PipelineConfig:
    args = copy.deepcopy(
        yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["name"] = f"it_{tag}_{unique}"
    args["input"]["topic"] = f"it.payments.{tag}.{unique}"
    args["ingress"]["group_id"] = f"it-{tag}-{unique}"
    args["ingress"]["max_batch_size"] = 50
    args["features"]["online"] = []
    args["features"]["derived"] = []
    args["models"]["shadows"] = shadows
    args["outputs"] = {
        "scored": {"topic": f"it.scored.{tag}.{unique}", "contract": "payments.scored"}
    }
    if shadows:
        args["outputs"]["shadow"] = {
            "topic": f"it.shadow.{tag}.{unique}",
            "contract": "fraud.shadow",
        }
    args["decision"]["rules"][0]["publish"]["topic"] = f"it.flagged.{tag}.{unique}"
    args["promotion"]["shadow"] = None
    return PipelineConfig.from_args(args)


def _scores(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(np.clip(columns["amount"] / 1000.0, 0, 1))


class Primary:
    name = "champion"

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        return Prediction(
            scores=_scores(columns), model_name="amount", model_version="1", latency_ms=0.1
        )


class SlowShadow:
    name = "slow"

    def __init__(self) -> None:
        self.calls = 0
        self.loop: Any = None
        #: batches the ingress committed while each call of this shadow was in flight
        self.commits_during: list[int] = []

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        self.calls += 1
        before = self.loop.stats.commits if self.loop is not None else 0
        try:
            await asyncio.sleep(5.0)
        finally:  # cancelled at the shadow's deadline: count what committed meanwhile
            if self.loop is not None:
                self.commits_during.append(self.loop.stats.commits - before)
        return Prediction(
            scores=_scores(columns), model_name="amount", model_version="9", latency_ms=2000
        )


class BrokenShadow:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        self.calls += 1
        raise RuntimeError("shadow model exploded (test)")


class GoodShadow:
    name = "good"

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        s = np.clip(_scores(columns) * 1.05, 0, 1)  # a little different: some disagreement
        return Prediction(scores=s, model_name="amount", model_version="2", latency_ms=0.2)


async def _read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 60) -> list[Any]:
    return await read_records(bootstrap, topic, n, timeout_s)


async def _run(
    cfg: PipelineConfig, events: list[dict[str, Any]], bootstrap: str, shadows: list[Any]
) -> tuple[Any, dict[str, dict[str, Any]]]:
    await ensure_topics_async(bootstrap, pipeline_topics(cfg), partitions=2)
    async with EventProducer(
        bootstrap,
        cfg.input.topic,
        Codec.for_contract("payments.initiated"),
        key_field=cfg.input.key_field,
    ) as p:
        await p.send_many(events)
    loop = await build_ingress(cfg, Primary(), shadows, metrics_endpoint=False)
    for s in shadows:
        if isinstance(s, SlowShadow):
            s.loop = loop
    await loop.start()
    task = asyncio.create_task(loop.run())
    t0 = time.monotonic()
    try:
        while loop.stats.scored < len(events) and time.monotonic() - t0 < 90:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        scored_s = time.monotonic() - t0
        # let the shadows finish (or time out) so their counts are final
        deadline = time.monotonic() + 20
        while loop.shadows._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await loop.close()
        task.cancel()
    print(
        f"{cfg.name}: {len(events)} events scored in {scored_s:.2f} s "
        f"(shadows: {[s.name for s in shadows]})"
    )
    msgs = await _read_all(bootstrap, cfg.outputs.scored.topic, len(events))
    codec = Codec.for_contract("payments.scored")
    recs = {r["event_id"]: r for r in (codec.decode(m.value) for m in msgs)}
    return loop, recs


async def test_slow_and_failing_shadows_leave_the_primary_unchanged(stack, unique: str) -> None:
    events = [le.event for le in World(seed=11, n_users=40).stream(start=0, rate=20).take(N)]
    base_cfg = _cfg(unique, "base", [])
    shadows_cfg = _cfg(
        unique,
        "shad",
        [
            {"name": "slow", "uri": "models:/amount@challenger", "timeout_s": 1.5},
            {"name": "broken", "uri": "models:/amount@challenger"},
            {"name": "good", "uri": "models:/amount@challenger", "sample_fraction": 0.5},
        ],
    )
    slow, broken = SlowShadow(), BrokenShadow()
    _, base = await _run(base_cfg, events, stack.kafka_bootstrap, [])
    loop, with_shadows = await _run(
        shadows_cfg, events, stack.kafka_bootstrap, [slow, broken, GoodShadow()]
    )

    ids = sorted(e["event_id"] for e in events)
    assert sorted(base) == ids and sorted(with_shadows) == ids
    for eid in ids:
        a, b = base[eid], with_shadows[eid]
        assert (a["score"], a["decision"], a["rule"], a["model_version"]) == (
            b["score"],
            b["decision"],
            b["rule"],
            b["model_version"],
        ), eid
        # window sums are float additions whose order follows the batch boundaries, which
        # differ between two runs; equal up to rounding
        assert a["features"] == pytest.approx(b["features"], rel=1e-9), eid

    st = loop.stats
    assert slow.calls >= 1 and broken.calls >= 1
    # isolation, causally: the ingress kept committing batches while a slow shadow call was in
    # flight (had it awaited the shadow, no batch could commit during one); the batches
    # after the first call's start commit within its 1.5 s deadline
    assert max(slow.commits_during, default=0) >= 1, slow.commits_during
    assert st.shadow.timeouts == slow.calls  # every call of the 5 s shadow hit its 1.5 s deadline
    assert st.shadow.errors >= st.shadow.timeouts + broken.calls
    store = ShadowStore(stack.redis_url)
    counts_slow = store.counts(shadows_cfg.name, "slow")
    counts_broken = store.counts(shadows_cfg.name, "broken")
    assert counts_slow.get("timeouts", 0) == st.shadow.timeouts
    assert counts_broken.get("errors", 0) == broken.calls

    # the good shadow saw about half of the events (by event_id hash), all of them compared
    agg = store.aggregate(shadows_cfg.name, "good")
    from raylane.lifecycle.shadow import sample_mask

    expected = int(sample_mask(ids, 0.5).sum())
    assert agg.n == expected and (agg.primary_version, agg.shadow_version) == ("1", "2")
    assert agg.agreement_rate is not None and 0.5 < agg.agreement_rate <= 1.0
    assert agg.p95_abs_delta is not None and agg.p95_abs_delta > 0
    assert shadows_cfg.outputs.shadow is not None
    shadow_msgs = await _read_all(stack.kafka_bootstrap, shadows_cfg.outputs.shadow.topic, expected)
    recs = [Codec.for_contract("fraud.shadow").decode(m.value) for m in shadow_msgs]
    assert len(recs) == expected and {r["shadow_label"] for r in recs} == {"good"}
    assert all(r["sample_fraction"] == 0.5 and r["primary_label"] == "champion" for r in recs)
    store.reset(shadows_cfg.name, ["slow", "broken", "good"])
