"""The action runner against the real broker and Redis, with local HTTP servers, without Ray.

A webhook that fails N times then recovers gets every event once (retried with
backoff); a webhook that is down sends events to the action DLQ (after the last retry,
then at once while its breaker is open) with the DLQ header standard; the publish
handler emits payments.blocked under its contract; a replay of the same events runs
no handler twice.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from raylane.actions import ACTION_METRICS, build_runner
from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.kafka import deadletters as D
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.testing.kafka import isolated_args

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


class _Hook:
    """A local webhook receiver that answers 503 to its first `fail` requests."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.requests: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status = 503 if len(hook.requests) < hook.fail else 200
                hook.requests.append(
                    (status, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ok(self) -> list[dict[str, Any]]:
        return [b for s, _, b in self.requests if s == 200]


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook(fail=2)
    yield h
    h.server.shutdown()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there afterwards: a webhook that is down
    return port


def _cfg(unique: str, url: str, *, attempts: int, fail_max: int = 5) -> PipelineConfig:
    args = isolated_args(FRAUD, unique)
    args["name"] = f"act_{unique}"
    flagged = args["decision"]["rules"][0]["publish"]["topic"]
    args["actions"] = {
        "group_id": f"actions-{unique}",
        "topics": [
            {
                "topic": flagged,
                "contract": "payments.flagged",
                "handlers": [
                    {
                        "type": "webhook",
                        "url": url,
                        "attempts": attempts,
                        "backoff_s": 0.05,
                        "backoff_max_s": 0.2,
                        "timeout_s": 2,
                        "breaker": {"fail_max": fail_max, "reset_timeout_s": 60},
                    },
                    {
                        "type": "publish",
                        "output": {
                            "topic": f"payments.blocked.{unique}",
                            "contract": "payments.blocked",
                        },
                        "set": {"reason": "flagged by high_risk"},
                        "time_field": "blocked_at",
                    },
                ],
            }
        ],
    }
    return PipelineConfig.from_args(args)


def _flagged(n: int, pipeline: str) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": str(uuid.uuid4()),
            "correlation_id": f"corr-{uuid.uuid4().hex[:8]}",
            "pipeline": pipeline,
            "user_id": f"u{i:05d}",
            "merchant_id": "m0001",
            "merchant_category": "crypto",
            "amount": 900.0 + i,
            "currency": "EUR",
            "event_time": now,
            "score": 0.97,
            "decision": "flagged",
            "rule": "high_risk",
            "model_name": "fraud",
            "model_version": "1",
            "flagged_at": now,
        }
        for i in range(n)
    ]


async def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 20) -> list[Any]:
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await c.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(out) < n:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                out += msgs
        await asyncio.sleep(0.5)  # anything beyond n would show up now
        for msgs in (await c.getmany(timeout_ms=300)).values():
            out += msgs
    finally:
        await c.stop()
    return out


async def _run(cfg: PipelineConfig, stack: Any, batches: list[list[dict[str, Any]]]) -> Any:
    assert cfg.actions is not None
    topic = cfg.actions.topics[0]
    await ensure_topics_async(
        stack.kafka_bootstrap,
        [topic.topic, topic.dlq, f"payments.blocked.{cfg.name[4:]}"],
        partitions=2,
    )
    redis = aioredis.from_url(stack.redis_url)
    runner = build_runner(cfg, redis=redis)
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        async with EventProducer(
            stack.kafka_bootstrap,
            topic.topic,
            Codec.for_contract("payments.flagged"),
            key_field="user_id",
        ) as p:
            total = 0
            for batch in batches:
                await p.send_many(batch)
                total += len(batch)
                deadline = time.monotonic() + 60
                while runner.stats["events"] < total and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
    finally:
        runner.stop()
        await task
        await runner.close()
        await redis.aclose()
    return runner


async def test_webhook_retries_until_recovered_publish_derives_and_replays_run_nothing_twice(
    stack, unique: str, hook: _Hook
) -> None:
    cfg = _cfg(unique, hook.url, attempts=4)
    events = _flagged(3, cfg.name)
    retried = ACTION_METRICS.retried.labels(pipeline=cfg.name, handler="webhook")
    runner = await _run(cfg, stack, [events, events])  # the second batch replays the same event_ids
    assert runner.stats["events"] == 6
    assert (
        runner.stats["done"] == 6 and runner.stats["duplicate"] == 6 and runner.stats["failed"] == 0
    )
    # two 503s, then each event delivered exactly once, correlation id in headers and body
    assert [s for s, _, _ in hook.requests] == [503, 503, 200, 200, 200]
    assert retried._value.get() == 2
    ok = hook.ok()
    assert sorted(b["event"]["event_id"] for b in ok) == sorted(e["event_id"] for e in events)
    by_id = {e["event_id"]: e["correlation_id"] for e in events}
    for _status, headers, body in hook.requests[2:]:
        cid = by_id[body["event"]["event_id"]]
        assert headers["x-correlation-id"] == cid and body["correlation_id"] == cid
        assert headers["idempotency-key"] == body["event"]["event_id"]
    # payments.blocked: one derived event per event, under its contract, correlated
    codec = Codec.for_contract("payments.blocked")
    blocked = await _read(stack.kafka_bootstrap, f"payments.blocked.{unique}", 3)
    assert len(blocked) == 3
    decoded = [codec.decode(m.value) for m in blocked]
    assert {d["event_id"]: d["correlation_id"] for d in decoded} == by_id
    assert all(d["reason"] == "flagged by high_risk" and d["blocked_at"] for d in decoded)
    assert all(
        dict(m.headers)["raylane.correlation_id"].decode() == by_id[d["event_id"]]
        for m, d in zip(blocked, decoded, strict=True)
    )
    assert await _read(stack.kafka_bootstrap, cfg.actions.topics[0].dlq, 0, timeout_s=1) == []  # type: ignore[union-attr]


async def test_webhook_down_sends_events_to_the_action_dlq_and_opens_its_breaker(
    stack, unique: str
) -> None:
    cfg = _cfg(unique, f"http://127.0.0.1:{_free_port()}/hook", attempts=3, fail_max=2)
    assert cfg.actions is not None
    events = _flagged(4, cfg.name)
    retried = ACTION_METRICS.retried.labels(pipeline=cfg.name, handler="webhook")
    runner = await _run(cfg, stack, [events])
    assert runner.stats["failed"] == 4 and runner.stats["done"] == 4  # publish still ran for each
    # the first two events were retried (2 sleeps each), then the breaker opened: no more attempts
    assert retried._value.get() == 4
    assert (
        ACTION_METRICS.breaker_open.labels(pipeline=cfg.name, handler="webhook")._value.get() == 1
    )
    topic = cfg.actions.topics[0]
    dlq = await _read(stack.kafka_bootstrap, topic.dlq, 4)
    assert len(dlq) == 4
    codec = Codec.for_contract("payments.flagged")
    by_id = {e["event_id"]: e for e in events}
    messages = []
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers}
        ev = codec.decode(m.value)  # the original bytes
        assert h[D.H_CLASS] == "ActionFailed" and h[D.H_STAGE] == "action"
        assert h[D.H_TOPIC] == topic.topic and h["raylane.action.handler"] == "webhook"
        assert h[D.H_CORRELATION] == by_id[ev["event_id"]]["correlation_id"]
        assert {D.H_PARTITION, D.H_OFFSET, D.H_TIME, D.H_MESSAGE} <= set(h)
        messages.append(h[D.H_MESSAGE])
    assert sum("after 3 attempts" in msg for msg in messages) == 2
    assert sum("circuit breaker open" in msg for msg in messages) == 2


async def test_crash_mid_handler_reruns_it_and_any_handler_error_goes_to_the_dlq(
    stack, unique: str
) -> None:
    """At-least-once effect across crashes: a claim left `pending` by a runner that died
    mid-handler makes the batch wait until it expires, then the handler runs. A handler that
    raises something unexpected sends the event to the action DLQ and the loop goes on. A
    non-ASCII correlation id reaches the webhook percent-encoded, not as a crash."""
    from urllib.parse import quote

    from raylane.actions.runner import PENDING, dedupe_key

    hook = _Hook(fail=0)
    try:
        cfg = _cfg(unique, hook.url, attempts=2)
        assert cfg.actions is not None
        events = _flagged(4, cfg.name)
        events[2]["correlation_id"] = "kørsel-✓-ünïcode"
        redis = aioredis.from_url(stack.redis_url)
        crashed = dedupe_key(cfg.name, "webhook", events[0]["event_id"])
        topic = cfg.actions.topics[0]
        await ensure_topics_async(
            stack.kafka_bootstrap, [topic.topic, topic.dlq, f"payments.blocked.{unique}"], 2
        )
        runner = build_runner(cfg, redis=redis)

        class Exploding:
            name = "explode"

            async def run(self, ev: Any) -> None:
                if ev.event_id == events[1]["event_id"]:
                    raise KeyError("no such field (test)")

        runner.handlers[topic.topic] = [*runner.handlers[topic.topic], Exploding()]
        await runner.start()
        task = asyncio.create_task(runner.run())
        try:
            joined = time.monotonic() + 60
            while not runner._consumer.assignment():  # in the group: it reads at once now
                assert time.monotonic() < joined, "the runner never got its partitions"
                await asyncio.sleep(0.05)
            # what a runner killed inside the webhook call of event 0 leaves behind
            await redis.set(crashed, PENDING, ex=5)
            async with EventProducer(
                stack.kafka_bootstrap,
                topic.topic,
                Codec.for_contract("payments.flagged"),
                key_field="user_id",
            ) as p:
                await p.send_many(events)
            deadline = time.monotonic() + 60
            while runner.stats["events"] < 4 or len(hook.ok()) < 4:
                assert time.monotonic() < deadline, runner.stats
                await asyncio.sleep(0.2)
        finally:
            runner.stop()
            await task
            await runner.close()
            await redis.aclose()
        # every event reached the webhook exactly once, the crashed one after its claim expired
        assert sorted(b["event"]["event_id"] for b in hook.ok()) == sorted(
            e["event_id"] for e in events
        )
        assert runner.stats["errors"] >= 1  # the batch waited on the pending claim
        by_id = {b["event"]["event_id"]: h for _, h, b in hook.requests}
        assert by_id[events[2]["event_id"]]["x-correlation-id"] == quote(
            events[2]["correlation_id"], safe=""
        )
        dlq = await _read(stack.kafka_bootstrap, topic.dlq, 1)
        assert len(dlq) == 1
        h = {k: v.decode() for k, v in dlq[0].headers}
        assert h[D.H_CLASS] == "ProcessingError" and h["raylane.action.handler"] == "explode"
        assert "KeyError" in h[D.H_MESSAGE]
        assert (
            Codec.for_contract("payments.flagged").decode(dlq[0].value)["event_id"]
            == (events[1]["event_id"])
        )
    finally:
        hook.server.shutdown()
