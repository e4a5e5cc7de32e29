"""An output the real producer refuses for good does not stall its partition.

The ingress producer's ``max_request_size`` is set below the size of one event's scored
output (its long ids are copied into the output and its key) but above that event's dead
letter; aiokafka refuses such a record in ``send()`` with MessageSizeTooLargeError. The
event is dead-lettered (PublishRejected), every other output is published and the offsets
are committed. Real embedded broker and Redis, no Ray.
"""

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
from raylane.ingest.consumer import IngressLoop
from raylane.kafka import deadletters as D
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.monitoring.metrics import METRICS
from raylane.pipeline.processor import Prediction
from raylane.pipeline.wiring import build_processor
from raylane.sinks.kafka import KafkaSink
from raylane.testing import World
from raylane.testing.kafka import committed_offsets, partition_ends, read_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]
LONG = 4000  # chars of user_id and merchant_id: under input.max_string_chars (4096)


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
    return PipelineConfig.from_args(args)


class LowModel:
    """Scores every event 0.1: nothing is flagged, each event has one (scored) output."""

    name = "low"

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        n = len(columns["amount"])
        return Prediction(
            scores=np.full(n, 0.1), model_name="low", model_version="1", latency_ms=0.1
        )


async def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 30) -> list[Any]:
    return await read_records(bootstrap, topic, n, timeout_s)


async def test_an_output_over_the_producers_limit_is_dead_lettered_and_the_rest_goes_on(
    stack, unique: str
) -> None:
    cfg = _cfg(unique)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=1)
    codec = Codec.for_contract("payments.initiated")
    events = [le.event for le in World(seed=4, n_users=20).stream(start=0, rate=10).take(12)]
    big = {**events[5], "user_id": "u" * LONG, "merchant_id": "m" * LONG}
    big_value = codec.encode(big)
    # its output carries both ids in the value and the user id as key: > 2 * LONG + LONG;
    # its dead letter carries the input (about 2 * LONG) plus at most ~3 KB of headers
    limit = len(big_value) + 3000
    assert limit < 3 * LONG

    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[:5])
        await prod.send_raw(
            big_value,
            key=b"big-user",  # a key over input.max_key_bytes would be refused at decode
            headers=[("correlation_id", big["correlation_id"].encode())],
        )
        await prod.send_many(events[6:])

    lab = {"pipeline": cfg.name, "error": "MessageSizeTooLargeError", "record": "output"}
    loop = IngressLoop(
        cfg,
        processor=build_processor(cfg, LowModel(), settings=stack),
        sink=KafkaSink(
            stack.kafka_bootstrap, client_id=f"it-{unique}", linger_ms=1, max_request_size=limit
        ),
        kafka=stack.kafka_bootstrap,
        client_id=f"it-{unique}",
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        deadline = time.monotonic() + 60
        while loop.stats.commits == 0 or loop.stats.events_in < 12:
            assert time.monotonic() < deadline, f"stuck: {loop.stats}"
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        # the loop goes on after the refusal
        async with EventProducer(
            stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
        ) as prod:
            await prod.send({**events[0], "event_id": "after-the-refusal"})
        while loop.stats.events_in < 13:
            assert time.monotonic() < deadline, f"stuck: {loop.stats}"
            await asyncio.sleep(0.05)
    finally:
        await loop.close()
        task.cancel()

    s = loop.stats
    assert s.rejected == 1 and s.dead_letters_lost == 0 and s.dlq == 1 and s.scored == 13
    assert METRICS.publish_rejected.labels(**lab)._value.get() == 1

    scored = await _read(stack.kafka_bootstrap, cfg.outputs.scored.topic, 12)
    out = Codec.for_contract("payments.scored")
    ids = sorted(out.decode(m.value)["event_id"] for m in scored)
    expected = [e["event_id"] for e in events if e["event_id"] != big["event_id"]]
    assert ids == sorted([*expected, "after-the-refusal"])

    (dl,) = await _read(stack.kafka_bootstrap, cfg.input.dlq, 1)
    h = dict(dl.headers)
    assert h[D.H_CLASS] == b"PublishRejected" and h[D.H_STAGE] == b"publish"
    assert b"MessageSizeTooLargeError" in h[D.H_MESSAGE]
    assert cfg.outputs.scored.topic.encode() in h[D.H_MESSAGE]
    assert h[D.H_TOPIC] == cfg.input.topic.encode() and h[D.H_OFFSET] == b"5"
    assert h[D.H_CORRELATION] == big["correlation_id"].encode()
    assert dl.value == big_value and dl.key == b"big-user"

    ends = await partition_ends(stack.kafka_bootstrap, cfg.input.topic)
    committed = await committed_offsets(
        stack.kafka_bootstrap, cfg.ingress.group_id, cfg.input.topic, ends
    )
    assert committed == ends == {0: 13}
