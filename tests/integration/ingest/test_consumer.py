"""The ingress loop against the real embedded broker and Redis, without Ray.

The model is an in-process client (the loop does not care where scores come
from); features, codecs, DLQ, breakers and commits are the real ones.
"""

from __future__ import annotations

import asyncio
import copy
import json
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
from raylane.errors import DependencyError
from raylane.ingest import build_ingress
from raylane.kafka import deadletters as D
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.client import connection
from raylane.kafka.producer import EventProducer
from raylane.kafka.replay import read_dead_letters
from raylane.pipeline.processor import Prediction
from raylane.testing import World
from raylane.testing.kafka import committed_offsets, partition_ends, read_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]


def _cfg(unique: str) -> PipelineConfig:
    """The fraud pipeline on unique topics, windows only (no Feast needed), no shadows."""
    args = copy.deepcopy(
        yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["name"] = f"it_{unique}"
    args["input"]["topic"] = f"it.payments.{unique}"
    args["ingress"]["group_id"] = f"it-{unique}"
    args["features"]["online"] = []
    args["features"]["derived"] = []
    args["models"]["shadows"] = []
    args["outputs"] = {"scored": {"topic": f"it.scored.{unique}", "contract": "payments.scored"}}
    args["decision"]["rules"][0]["publish"]["topic"] = f"it.flagged.{unique}"
    args["breaker"] = {"fail_max": 2, "reset_timeout_s": 0.3}
    return PipelineConfig.from_args(args)


class AmountModel:
    """Scores by amount, so the test knows which events a rule flags."""

    name = "amount"

    def __init__(self) -> None:
        self.calls = 0

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        self.calls += 1
        s = np.clip(columns["amount"] / 1000.0, 0, 1)
        return Prediction(scores=s, model_name="amount", model_version="1", latency_ms=0.1)


async def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 30) -> list[Any]:
    return await read_records(bootstrap, topic, n, timeout_s)


async def _run_until(loop: Any, cond: Any, timeout_s: float = 60) -> None:
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        deadline = time.monotonic() + timeout_s
        while not cond() and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        await loop.close()
        task.cancel()


async def test_dlq_keeps_original_bytes_and_names_the_error(stack, unique: str) -> None:
    cfg = _cfg(unique)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)
    codec = Codec.for_contract("payments.initiated", formats=("avro", "json"))
    events = [le.event for le in World(seed=3, n_users=50).stream(start=0, rate=10).take(30)]
    bad = {
        b"\x00\x00\x00\x00\x01\x02": "TruncatedEvent",
        b"\x07garbage": "BadMagicByte",
        json.dumps({"event_id": "x"}).encode(): "MissingField",
        b"": "EmptyEvent",
    }
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[:15])
        for raw in bad:
            await prod.send_raw(
                raw,
                key=b"user-x",
                headers=[("correlation_id", b"cid-" + raw[:4].hex().encode()), ("origin", b"test")],
            )
        await prod.send_many(events[15:])

    model = AmountModel()
    loop = await build_ingress(cfg, model, metrics_endpoint=False)
    await _run_until(loop, lambda: loop.stats.scored + loop.stats.dlq >= 34)
    assert loop.stats.scored == 30 and loop.stats.dlq == 4

    dlq = await _read(stack.kafka_bootstrap, cfg.input.dlq, 4)
    assert {m.value for m in dlq} == set(bad)
    for m in dlq:
        h = {k: v for k, v in m.headers}
        assert h[D.H_CLASS].decode() == bad[m.value]
        assert h[D.H_TOPIC].decode() == cfg.input.topic
        assert h[D.H_STAGE].decode() in {"decode", "validate"}
        assert h[D.H_CORRELATION] == b"cid-" + m.value[:4].hex().encode()
        assert int(h[D.H_PARTITION]) in (0, 1) and int(h[D.H_OFFSET]) >= 0
        assert h[D.H_MESSAGE] and int(h[D.H_TIME]) > 0
        assert h["origin"] == b"test" and m.key == b"user-x"

    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, 30)
    out = Codec.for_contract("payments.scored")
    recs = [out.decode(m.value) for m in scored]
    assert sorted(r["event_id"] for r in recs) == sorted(e["event_id"] for e in events)
    assert all(r["features"]["user_txn_count_60s"] >= 1 for r in recs)
    # offsets: committed at the end of both partitions
    ends = await partition_ends(stack.kafka_bootstrap, cfg.input.topic)
    committed = await committed_offsets(
        stack.kafka_bootstrap, cfg.ingress.group_id, cfg.input.topic, ends
    )
    assert committed == ends


class FlakyWindows:
    """Window source whose dependency is down for the first `down` calls."""

    def __init__(self, inner: Any, down: int) -> None:
        self.inner, self.down, self.calls = inner, down, 0

    async def update_and_read(self, events: Any) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls <= self.down:
            raise DependencyError("redis is down (test)", stage="features")
        return await self.inner.update_and_read(events)


async def test_dead_dependency_pauses_and_loses_nothing(stack, unique: str) -> None:
    import redis.asyncio as aioredis

    from raylane.features import RedisWindowStore
    from raylane.pipeline import build_processor

    cfg = _cfg(unique)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)
    events = [le.event for le in World(seed=4, n_users=50).stream(start=0, rate=10).take(200)]
    async with EventProducer(
        stack.kafka_bootstrap,
        cfg.input.topic,
        Codec.for_contract("payments.initiated"),
        key_field=cfg.input.key_field,
    ) as p:
        await p.send_many(events)

    client = aioredis.from_url(stack.redis_url)
    flaky = FlakyWindows(RedisWindowStore(client, cfg.name, cfg.features.windows), down=6)
    model = AmountModel()
    from raylane.ingest.consumer import IngressLoop

    processor = build_processor(cfg, model, windows=flaky)
    loop = IngressLoop(cfg, kafka=stack.kafka_bootstrap, processor=processor)
    paused_seen: list[bool] = []
    views: list[dict[str, Any]] = []  # what an operator's `debug` call shows while paused

    def cond() -> bool:
        paused_seen.append(loop.stats.paused)
        if loop.stats.paused and loop._consumer is not None and loop._consumer.assignment():
            views.append(loop.debug())
        return loop.stats.scored >= 200

    await _run_until(loop, cond)
    await client.aclose()
    assert any(paused_seen), "the consumer never paused while its dependency was down"
    # the debug view reads aiokafka's own state: both partitions, paused, with a position
    assert views, "no debug view was taken while paused"
    parts = views[-1]["partitions"]
    assert sorted(parts) == [f"{cfg.input.topic}[0]", f"{cfg.input.topic}[1]"]
    assert all(p["paused"] is True and isinstance(p["position"], int) for p in parts.values())
    assert views[-1]["stats"]["paused"] is True
    assert loop.stats.retries >= 6 and model.calls >= 1
    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, 200)
    ids = [Codec.for_contract("payments.scored").decode(m.value)["event_id"] for m in scored]
    assert sorted(set(ids)) == sorted(e["event_id"] for e in events)
    # nothing was scored without its features: every record has the window values
    recs = [Codec.for_contract("payments.scored").decode(m.value) for m in scored]
    assert all(r["features"]["user_txn_count_60s"] is not None for r in recs)


class PoisonWindows:
    """The real Redis window store, except that it raises an unexpected error (not an
    outage) for the batches that hold one of the `poison` event ids."""

    def __init__(self, inner: Any, poison: set[str]) -> None:
        self.inner, self.poison, self.calls = inner, poison, 0

    async def update_and_read(self, events: Any) -> dict[str, np.ndarray]:
        self.calls += 1
        hit = [e["event_id"] for e in events if e["event_id"] in self.poison]
        if hit:
            raise ValueError(f"cannot window event {hit[0]} (test)")
        return await self.inner.update_and_read(events)


async def test_poison_records_are_isolated_and_scoring_never_stops(stack, unique: str) -> None:
    """The reliability issue's repro: valid payments around poison ones (a NaN amount in Avro,
    ``1e999`` in JSON, a far-future event_time, and two records a feature source fails on):
    every valid payment is scored once, each poison record is in the DLQ with its class."""
    import struct

    import redis.asyncio as aioredis

    from raylane.features import RedisWindowStore
    from raylane.ingest.consumer import IngressLoop
    from raylane.pipeline import build_processor

    cfg = _cfg(unique)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)
    codec = Codec.for_contract("payments.initiated", formats=("avro", "json"))
    world = World(seed=5, n_users=50)
    now = int(time.time() * 1000)
    events = [le.event for le in world.stream(start=now - 60_000, rate=20).take(400)]
    poison_ids = {events[120]["event_id"], events[121]["event_id"]}  # fail in the window stage

    nan_avro = bytearray(codec.encode(dict(events[0], event_id="nan-avro", amount=1.5)))
    at = bytes(nan_avro).index(struct.pack("<d", 1.5))
    nan_avro[at : at + 8] = struct.pack("<d", float("nan"))
    inf_json = json.dumps(dict(events[0], event_id="inf-json", amount=7.25))
    inf_json = inf_json.replace("7.25", "1e999").encode()
    future = codec.encode(dict(events[0], event_id="far-future", event_time=now + 86_400_000))
    bad = {
        bytes(nan_avro): "NonFiniteNumber",
        inf_json: "NonFiniteNumber",
        future: "EventTimeOutOfRange",
    }
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[:200])
        for raw in bad:
            await prod.send_raw(raw, key=b"attacker")
        await prod.send_many(events[200:])

    client = aioredis.from_url(stack.redis_url)
    windows = PoisonWindows(RedisWindowStore(client, cfg.name, cfg.features.windows), poison_ids)
    loop = IngressLoop(
        cfg,
        kafka=stack.kafka_bootstrap,
        processor=build_processor(cfg, AmountModel(), windows=windows),
    )
    valid = len(events) - len(poison_ids)
    await _run_until(loop, lambda: loop.stats.scored >= valid and loop.stats.dlq >= 5, 90)
    await client.aclose()

    assert loop.stats.scored == valid and loop.stats.dlq == len(bad) + len(poison_ids)
    assert loop.stats.isolations >= 1 and loop.stats.poison == len(poison_ids)
    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, valid)
    ids = [Codec.for_contract("payments.scored").decode(m.value)["event_id"] for m in scored]
    assert sorted(set(ids)) == sorted(
        e["event_id"] for e in events if e["event_id"] not in poison_ids
    )
    dlq = await _read(stack.kafka_bootstrap, cfg.input.dlq, len(bad) + len(poison_ids))
    by_value = {m.value: {k: v for k, v in m.headers} for m in dlq}
    for raw, cls in bad.items():
        assert by_value[raw][D.H_CLASS].decode() == cls, by_value[raw][D.H_MESSAGE]
    isolated = [h for raw, h in by_value.items() if raw not in bad]
    assert sorted(h[D.H_CLASS].decode() for h in isolated) == ["ProcessingError"] * 2
    assert all(b"ValueError" in h[D.H_MESSAGE] for h in isolated)
    got_ids = {codec.decode(raw)["event_id"] for raw in by_value if raw not in bad}
    assert got_ids == poison_ids


async def test_a_compression_bomb_is_dead_lettered_whole_and_scoring_goes_on(
    stack, unique: str
) -> None:
    """A gzip record batch that inflates past input.max_decompressed_batch_bytes, between
    valid payments on the same partition: the ingress dead-letters the batch (its raw bytes,
    its offsets), scores every valid payment and commits past the bomb."""
    cfg = _cfg(unique)
    cfg = PipelineConfig.from_args(
        {
            **cfg.model_dump(mode="json", exclude_none=True),
            "input": {
                **cfg.input.model_dump(mode="json", exclude_none=True),
                "max_decompressed_batch_bytes": 2 << 20,
            },
        }
    )
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=1)
    codec = Codec.for_contract("payments.initiated", formats=("avro", "json"))
    events = [le.event for le in World(seed=6, n_users=20).stream(start=0, rate=10).take(40)]
    doc = dict(events[0], event_id="bomb", note=" " * (8 << 20))  # 8 MiB, about 8 KB gzipped
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[:20])
    bomb = connection(stack.kafka_bootstrap).producer(
        compression_type="gzip", max_request_size=1 << 30
    )
    await bomb.start()
    try:
        md = await bomb.send_and_wait(cfg.input.topic, json.dumps(doc).encode(), key=b"attacker")
    finally:
        await bomb.stop()
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[20:])

    loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
    await _run_until(loop, lambda: loop.stats.scored + loop.stats.dlq >= 41)
    assert loop.stats.scored == 40 and loop.stats.dlq == 1
    assert loop.stats.unreadable_batches == 1

    (letter,) = await _read(stack.kafka_bootstrap, cfg.input.dlq, 1)
    h = {k: v for k, v in letter.headers}
    assert h[D.H_CLASS] == b"DecompressedTooLarge" and h[D.H_STAGE] == b"fetch"
    assert h[D.H_BATCH] == f"{md.offset}..{md.offset} gzip".encode()
    assert int(h[D.H_OFFSET]) == md.offset and h[D.H_TOPIC].decode() == cfg.input.topic
    assert b"max_decompressed_batch_bytes=2097152" in h[D.H_MESSAGE]
    assert 0 < len(letter.value) < 64 << 10  # the compressed batch, as the broker holds it
    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, 40)
    out = Codec.for_contract("payments.scored")
    assert sorted(out.decode(m.value)["event_id"] for m in scored) == sorted(
        e["event_id"] for e in events
    )
    ends = await partition_ends(stack.kafka_bootstrap, cfg.input.topic)
    committed = await committed_offsets(
        stack.kafka_bootstrap, cfg.ingress.group_id, cfg.input.topic, ends
    )
    assert committed == ends == {0: 41}


async def test_a_batch_over_the_limit_is_replayed_record_by_record_once_it_fits(
    stack, unique: str
) -> None:
    """A legitimate gzip batch larger than a (here small) input.max_decompressed_batch_bytes
    is dead-lettered whole; `dlq replay` skips it until given --max-batch-bytes, then
    re-publishes its records one by one, and the ingress scores every one of them."""
    from raylane.kafka.replay import replay

    cfg = _cfg(unique)
    small = {"max_event_bytes": 64 << 10, "max_decompressed_batch_bytes": 64 << 10}
    cfg = PipelineConfig.from_args(
        {
            **cfg.model_dump(mode="json", exclude_none=True),
            "input": {**cfg.input.model_dump(mode="json", exclude_none=True), **small},
        }
    )
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=1)
    codec = Codec.for_contract("payments.initiated")
    events = [le.event for le in World(seed=7, n_users=30).stream(start=0, rate=10).take(600)]
    values = [codec.encode(e) for e in events]
    assert sum(map(len, values)) > 64 << 10  # one batch of all of them is over the limit
    gz = connection(stack.kafka_bootstrap).producer(
        compression_type="gzip", linger_ms=200, max_batch_size=4 << 20
    )
    await gz.start()
    try:
        futs = [
            await gz.send(cfg.input.topic, v, key=e["user_id"].encode())
            for v, e in zip(values, events, strict=True)
        ]
        offsets = {(await f).offset for f in futs}
    finally:
        await gz.stop()
    assert offsets == set(range(600))

    loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
    await _run_until(loop, lambda: loop.stats.dlq >= 1)
    assert (loop.stats.scored, loop.stats.dlq, loop.stats.unreadable_batches) == (0, 1, 1)
    (letter,) = await read_dead_letters(stack.kafka_bootstrap, cfg.input.dlq)
    assert letter.error_class == "DecompressedTooLarge" and letter.is_batch
    assert not letter.truncated, "the compressed batch must fit max_event_bytes to be replayed"

    async def again(max_batch_bytes: int | None) -> Any:
        return await replay(
            stack.kafka_bootstrap,
            cfg.input.dlq,
            allowed_topics={cfg.input.topic},
            max_batch_bytes=max_batch_bytes,
            registry=codec.registry,  # to read each record's event id, for the ledger
        )

    kept = await again(None)
    assert (kept.read, kept.batches, kept.replayed) == (1, 1, 0)
    too_small = await again(32 << 10)
    assert (too_small.batches, too_small.replayed) == (1, 0)
    rep = await again(1 << 20)
    assert (rep.batches, rep.replayed) == (0, 600)
    assert sorted(rep.event_ids) == sorted(e["event_id"] for e in events)
    twice = await again(1 << 20)
    assert (twice.replayed, twice.already_replayed) == (0, 600)

    loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
    await _run_until(loop, lambda: loop.stats.scored >= 600)
    assert (loop.stats.scored, loop.stats.dlq) == (600, 0)
    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, 600)
    out = Codec.for_contract("payments.scored")
    assert sorted(out.decode(m.value)["event_id"] for m in scored) == sorted(
        e["event_id"] for e in events
    )
