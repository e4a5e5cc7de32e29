"""Schema evolution and enforcement on the real broker: v1 and v2 of payments.initiated mixed
on one topic, read by v1 and v2 readers and by the ingress; the producer refuses bad events."""

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
from raylane.contracts import Codec, ContractViolation, WrongType
from raylane.ingest import build_ingress
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.kafka.reader import read_topic
from raylane.pipeline.processor import Prediction
from raylane.testing import World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]
SUBJECT = "payments.initiated-value"


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    return [le.event for le in World(seed=seed, n_users=30).stream(start=0, rate=10).take(n)]


async def _produce_mixed(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Even events written by a v1 producer, odd ones by a v2 producer with a device_id."""
    v1, v2 = Codec(SUBJECT, version=1), Codec(SUBJECT)
    assert (v1.version, v2.version) == (1, 2)
    async with (
        EventProducer(bootstrap, topic, v1, key_field="user_id") as p1,
        EventProducer(bootstrap, topic, v2, key_field="user_id") as p2,
    ):
        for i, ev in enumerate(events):
            if i % 2:
                await p2.send({**ev, "device_id": f"dev-{i}"}, wait=False)
            else:
                await p1.send(ev, wait=False)
        await p1.flush()
        await p2.flush()


async def test_v1_and_v2_readers_read_both_versions_from_one_topic(stack: Any, unique: str) -> None:
    topic = f"evo.{unique}"
    await ensure_topics_async(stack.kafka_bootstrap, [topic], partitions=1)
    events = _events(10, seed=21)
    await _produce_mixed(stack.kafka_bootstrap, topic, events)
    msgs = await read_topic(stack.kafka_bootstrap, topic)
    assert len(msgs) == 10
    ids = {Codec(SUBJECT, version=v).schema_id: v for v in (1, 2)}
    v1_reader = Codec(SUBJECT, version=1)
    v2_reader = Codec(SUBJECT)
    index = {ev["event_id"]: i for i, ev in enumerate(events)}
    seen = set()
    for m in msgs:  # two producers: their records interleave in any order
        new = v2_reader.decode(m.value)
        i = index[new["event_id"]]
        seen.add(i)
        assert ids[int.from_bytes(m.value[1:5], "big")] == (2 if i % 2 else 1)
        assert v1_reader.decode(m.value) == events[i]  # v1 reader: exactly v1's fields
        assert new == {**events[i], "device_id": f"dev-{i}" if i % 2 else None}
    assert seen == set(range(10))


class AmountModel:
    name = "amount"

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        s = np.clip(columns["amount"] / 1000.0, 0, 1)
        return Prediction(scores=s, model_name="amount", model_version="1", latency_ms=0.1)


async def test_ingress_scores_v1_and_v2_events_mixed_on_its_topic(stack: Any, unique: str) -> None:
    doc = yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    args.update(name=f"evo_{unique}")
    args["input"]["topic"] = f"evo.in.{unique}"
    args["ingress"]["group_id"] = f"evo-{unique}"
    args["features"].update(online=[], derived=[])
    args["models"]["shadows"] = []
    args["outputs"] = {"scored": {"topic": f"evo.scored.{unique}", "contract": "payments.scored"}}
    args["decision"]["rules"][0]["publish"]["topic"] = f"evo.flagged.{unique}"
    cfg = PipelineConfig.from_args(args)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)
    events = _events(40, seed=22)
    await _produce_mixed(stack.kafka_bootstrap, cfg.input.topic, events)

    loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        # returns as soon as all 40 are handled; the margin is for a loaded machine, where
        # joining the group alone has taken tens of seconds
        deadline = time.monotonic() + 150
        while loop.stats.scored + loop.stats.dlq < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await loop.close()
        task.cancel()
    assert (loop.stats.scored, loop.stats.dlq) == (40, 0)
    out = Codec.for_contract("payments.scored")
    scored = [
        out.decode(m.value)
        for m in await read_topic(stack.kafka_bootstrap, cfg.outputs.scored.topic)
    ]
    assert sorted(r["event_id"] for r in scored) == sorted(e["event_id"] for e in events)


async def test_producer_refuses_a_bad_event_and_sends_nothing(stack: Any, unique: str) -> None:
    topic = f"refuse.{unique}"
    await ensure_topics_async(stack.kafka_bootstrap, [topic], partitions=1)
    good = _events(3, seed=23)
    bad = {**good[1], "amount": "12.50"}
    async with EventProducer(
        stack.kafka_bootstrap, topic, Codec(SUBJECT), key_field="user_id"
    ) as prod:
        with pytest.raises(WrongType) as e:
            await prod.send_many([good[0], bad, good[2]])
        assert e.value.path == "amount" and "amount: expected double, got str" in e.value.message
        missing = {k: v for k, v in good[0].items() if k != "merchant_id"}
        with pytest.raises(ContractViolation, match="merchant_id") as e2:
            await prod.send(missing)
        assert e2.value.path == "merchant_id"
        nested = {**good[0], "device_id": 7}
        with pytest.raises(WrongType, match="device_id"):
            await prod.send(nested)
        await prod.flush()
    assert await read_topic(stack.kafka_bootstrap, topic) == []


async def test_ingress_with_the_confluent_registry_backend(
    stack: Any, unique: str, tmp_path: Path
) -> None:
    """`schema_registry: {type: confluent, url: ...}` runs the same data path over REST."""
    from raylane.contracts import FileSchemaRegistry, open_registry, register_contracts
    from raylane.testing.schema_registry import LocalSchemaRegistry

    with LocalSchemaRegistry(tmp_path / "sr") as sr:
        doc = yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())
        args = copy.deepcopy(doc["applications"][0]["args"])
        args.update(name=f"sr_{unique}", schema_registry={"type": "confluent", "url": sr.url})
        args["input"]["topic"] = f"sr.in.{unique}"
        args["ingress"]["group_id"] = f"sr-{unique}"
        args["features"].update(online=[], derived=[])
        args["models"]["shadows"] = []
        args["outputs"] = {
            "scored": {"topic": f"sr.scored.{unique}", "contract": "payments.scored"}
        }
        args["decision"]["rules"][0]["publish"]["topic"] = f"sr.flagged.{unique}"
        cfg = PipelineConfig.from_args(args)
        rest = open_registry(cfg.schema_registry)
        v1 = FileSchemaRegistry().get_version(SUBJECT, 1).text
        rest.register(SUBJECT, v1)
        ids = register_contracts(rest)  # v2 and the output contracts, through the gate
        assert rest.versions(SUBJECT) == [1, 2]
        await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=1)
        events = _events(20, seed=24)
        old, new = Codec(SUBJECT, rest, version=1), Codec(SUBJECT, rest)
        async with (
            EventProducer(
                stack.kafka_bootstrap, cfg.input.topic, old, key_field=cfg.input.key_field
            ) as p1,
            EventProducer(
                stack.kafka_bootstrap, cfg.input.topic, new, key_field=cfg.input.key_field
            ) as p2,
        ):
            await p1.send_many(events[:10])
            await p2.send_many([{**e, "device_id": "d"} for e in events[10:]])

        loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
        await loop.start()
        task = asyncio.create_task(loop.run())
        try:
            deadline = time.monotonic() + 60
            while loop.stats.scored + loop.stats.dlq < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await loop.close()
            task.cancel()
        assert (loop.stats.scored, loop.stats.dlq) == (20, 0)
        out = Codec("payments.scored-value", rest)
        msgs = await read_topic(stack.kafka_bootstrap, cfg.outputs.scored.topic)
        assert {int.from_bytes(m.value[1:5], "big") for m in msgs} == {ids["payments.scored-value"]}
        assert sorted(out.decode(m.value)["event_id"] for m in msgs) == sorted(
            e["event_id"] for e in events
        )
