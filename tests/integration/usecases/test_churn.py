"""A second use case from configuration only: churn risk on user behaviour events.

`serve_configs/churn.yaml` + its contracts + `models/churn/` and no platform code:
bootstrap trains and registers `churn`, the same ingress loop scores activity
events with the registered champion and publishes `churn-risk-scored`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from raylane.bootstrap import bootstrap, pipeline_topics
from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.ingest import build_ingress
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.pipeline import LocalModelClient
from raylane.testing import World

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

CHURN = Path(__file__).resolve().parents[3] / "serve_configs" / "churn.yaml"


async def test_churn_pipeline_scores_activity_events(stack, unique: str) -> None:
    await asyncio.to_thread(bootstrap, CHURN, quiet=True)
    args = copy.deepcopy(yaml.safe_load(CHURN.read_text())["applications"][0]["args"])
    args["input"]["topic"] = f"churn.activity.{unique}"
    args["ingress"]["group_id"] = f"churn-{unique}"
    args["outputs"]["scored"]["topic"] = f"churn-risk-scored.{unique}"
    args["outputs"]["shadow"]["topic"] = f"churn.shadow.{unique}"
    cfg = PipelineConfig.from_args(args)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)

    events = [le.event for le in World(seed=7, n_users=500).activity(rate=5.0, seed=3).take(300)]
    async with EventProducer(
        stack.kafka_bootstrap,
        cfg.input.topic,
        Codec.for_contract("churn.activity"),
        key_field=cfg.input.key_field,
    ) as p:
        await p.send_many(events)

    model = LocalModelClient(
        "champion", cfg.models.primary.uri, tracking_uri=stack.mlflow_tracking_uri
    )
    loop = await build_ingress(cfg, model, metrics_endpoint=False)
    await loop.start()
    task = asyncio.create_task(loop.run())
    deadline = time.monotonic() + 60
    while loop.stats.scored < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await loop.close()
    task.cancel()
    assert loop.stats.scored == 300 and loop.stats.dlq == 0

    c = AIOKafkaConsumer(
        cfg.outputs.scored.topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await c.start()
    recs = []
    try:
        while len(recs) < 300:
            got = await c.getmany(timeout_ms=2000)
            if not got:
                break
            codec = Codec.for_contract("churn-risk-scored")
            recs += [codec.decode(m.value) for ms in got.values() for m in ms]
    finally:
        await c.stop()
    assert sorted(r["event_id"] for r in recs) == sorted(e["event_id"] for e in events)
    assert {r["model_name"] for r in recs} == {"churn"}
    assert {r["decision"] for r in recs} <= {"retain", "at_risk"}
    assert all(set(r["features"]) == set(cfg.features.columns()) for r in recs)
    assert all(
        r["plan"] == e["plan"]
        for r, e in zip(
            sorted(recs, key=lambda r: r["event_id"]),
            sorted(events, key=lambda e: e["event_id"]),
            strict=False,
        )
    )
