"""One event's trace end to end, on the real broker and Redis (in-memory span exporter).

A producer span's ``traceparent`` goes in with a payment; the ingress (windows, an
in-process model, real codecs and Kafka) scores and flags it, and the action runner blocks
it. The test follows that one trace: the ingress's span for the event is the child of the
producer's, links to its batch span (whose children are the stages), every output carries
the event's context, and the action runner's spans and ``payments.blocked`` continue it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from raylane.actions import build_runner
from raylane.bootstrap import pipeline_topics
from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.ingest import build_ingress
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.monitoring import tracing
from raylane.testing import World
from raylane.testing.kafka import read_records
from raylane.testing.spans import captured_spans
from tests.integration.ingest.test_consumer import AmountModel, _cfg, _run_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STAGES = {"decode", "features", "score", "decision", "encode", "publish", "commit"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with captured_spans() as exporter:
        yield exporter


def _with_actions(cfg: PipelineConfig, unique: str) -> PipelineConfig:
    args: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True)
    flagged = cfg.decision.rules[0].publish
    assert flagged is not None
    args["actions"] = {
        "group_id": f"actions-{unique}",
        "topics": [
            {
                "topic": flagged.topic,
                "contract": "payments.flagged",
                "handlers": [
                    {
                        "type": "publish",
                        "output": {"topic": f"it.blocked.{unique}", "contract": "payments.blocked"},
                        "set": {"reason": "trace test"},
                        "time_field": "blocked_at",
                    }
                ],
            }
        ],
    }
    return PipelineConfig.from_args(args)


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def test_one_events_trace_runs_from_the_producer_to_payments_blocked(
    stack, unique: str, spans: InMemorySpanExporter
) -> None:
    cfg = _with_actions(_cfg(unique), unique)
    assert cfg.actions is not None
    blocked_topic = f"it.blocked.{unique}"
    await ensure_topics_async(
        stack.kafka_bootstrap,
        [*pipeline_topics(cfg), blocked_topic, cfg.actions.topics[0].dlq],
        partitions=2,
    )
    events = [le.event for le in World(seed=5, n_users=40).stream(start=0, rate=10).take(20)]
    for e in events:
        e["amount"] = 10.0  # AmountModel scores amount/1000: none of these is flagged
    traced = {**events[7], "event_id": f"traced-{uuid.uuid4().hex[:8]}", "amount": 990.0}
    codec = Codec.for_contract("payments.initiated")

    # the producer's own span: what a payment service would send
    producer_tracer = TracerProvider().get_tracer("payment-service")
    with producer_tracer.start_as_current_span("POST /payments", kind=SpanKind.PRODUCER) as ps:
        carrier: dict[str, str] = {}
        inject(carrier)
        producer_ctx = ps.get_span_context()
    headers = [(k, v.encode()) for k, v in carrier.items()]
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
    ) as prod:
        await prod.send_many(events[:10])
        await prod.send_raw(codec.encode(traced), key=traced["user_id"].encode(), headers=headers)
        await prod.send_many(events[10:])

    loop = await build_ingress(cfg, AmountModel(), metrics_endpoint=False)
    await _run_until(loop, lambda: loop.stats.scored >= 21)
    assert loop.stats.scored == 21

    redis = aioredis.from_url(stack.redis_url)
    runner = build_runner(cfg, redis=redis)
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 60
        while runner.stats["done"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await task
        await runner.close()
        await redis.aclose()
    assert runner.stats["done"] == 1

    trace_id = _hex(producer_ctx.trace_id, 32)
    scored = await read_records(stack.kafka_bootstrap, cfg.outputs.scored.topic, 21)
    flagged_topic = cfg.decision.rules[0].publish
    assert flagged_topic is not None
    flagged = await read_records(stack.kafka_bootstrap, flagged_topic.topic, 1)
    blocked = await read_records(stack.kafka_bootstrap, blocked_topic, 1)
    out_codec = Codec.for_contract("payments.scored")
    by_id = {out_codec.decode(m.value)["event_id"]: m for m in scored}
    assert tracing.trace_id_of(list(by_id[traced["event_id"]].headers)) == trace_id
    assert tracing.trace_id_of(list(flagged[0].headers)) == trace_id
    assert tracing.trace_id_of(list(blocked[0].headers)) == trace_id
    # the others' producers sent no context: their outputs carry their batch's trace
    others = {
        tracing.trace_id_of(list(m.headers)) for k, m in by_id.items() if k != traced["event_id"]
    }
    assert None not in others and trace_id not in others

    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    ours = [
        s for s in finished if s.context is not None and _hex(s.context.trace_id, 32) == trace_id
    ]
    event_span = next(s for s in ours if s.name == f"{cfg.input.topic} process")
    assert event_span.parent is not None and event_span.parent.span_id == producer_ctx.span_id
    assert event_span.attributes is not None
    assert event_span.attributes["messaging.destination.name"] == cfg.input.topic
    # the event span links to its batch, whose children are the stages
    (link,) = event_span.links
    batch = next(
        s for s in finished if s.context is not None and s.context.span_id == link.context.span_id
    )
    assert batch.name == "raylane.batch"
    stages = {
        s.name
        for s in finished
        if s.parent is not None and s.parent.span_id == link.context.span_id
    }
    assert stages >= STAGES, stages
    batches = {_hex(s.context.trace_id, 32) for s in finished if s.name == "raylane.batch"}
    assert others <= batches, (others, batches)
    # a span per event only where the producer traced: the other 20 events have none
    assert len([s for s in finished if s.name == f"{cfg.input.topic} process"]) == 1
    # the action runner continues the event's trace: its record span is the child of the
    # context on the flagged record (the event span), the handler's span its child
    assert flagged_topic.topic in {s.name.split(" ")[0] for s in ours}
    action_rec = next(s for s in ours if s.name == f"{flagged_topic.topic} process")
    assert action_rec.parent is not None and event_span.context is not None
    assert action_rec.parent.span_id == event_span.context.span_id
    handler = next(s for s in ours if s.name.startswith("action "))
    assert handler.parent is not None and action_rec.context is not None
    assert handler.parent.span_id == action_rec.context.span_id
    # the blocked record's context is the handler's span
    assert blocked[0].headers and dict(blocked[0].headers)["traceparent"].decode().split("-")[
        2
    ] == _hex(handler.context.span_id, 16)  # type: ignore[union-attr]
