"""The action runner: consume action topics, run each topic's handlers once per event_id.

Per (event, handler) the runner claims ``raylane:actions:<pipeline>:<handler>:<event_id>`` in
two phases: ``SET NX EX <claim_ttl_s>`` with the value ``pending``, then, once the handler has
succeeded, ``SET ... EX <dedupe_ttl_s>`` with ``done``. A re-delivered event that finds
``done`` is skipped (``duplicate``); one that finds ``pending`` (another runner is on it, or one
died mid-handler) makes the batch wait and retry: when a runner dies, its claim expires after
``claim_ttl_s`` and the event runs again, so a crash never loses an action (handlers are
idempotent by event_id: the webhook sends it as ``idempotency-key``). Then:

* success: ``done``.
* :class:`~raylane.actions.handlers.ActionFailed` (webhook retries exhausted, breaker open,
  invalid derived event), or any other error of the handler (``ProcessingError``, with its
  type): the event goes to the action DLQ (``<topic>.actions.dlq`` by default) with its
  original bytes and the header standard of :mod:`raylane.kafka.deadletters`, plus
  ``raylane.action.handler``; the claim is marked done (the DLQ owns it now) and the loop
  goes on.
* :class:`~raylane.errors.DependencyError` (Redis or Kafka failed): the claim is released
  and the whole batch is retried after a backoff; handlers that already succeeded find
  their claims and are not run twice.

Offsets are committed only after the batch's handlers and DLQ writes are done
(at-least-once delivery, exactly-once effect per handler within the dedupe TTL).
Plain asyncio; :mod:`raylane.serving._monitors` hosts it in a Serve deployment.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.exceptions import RedisError

from raylane.actions.handlers import (
    ActionEvent,
    Handler,
    PublishHandler,
    UpdateProfileHandler,
    WebhookHandler,
)
from raylane.actions.metrics import ACTION_METRICS
from raylane.config import ActionsConfig, ActionTopic, PipelineConfig, PublishAction, WebhookAction
from raylane.contracts import Codec, open_registry
from raylane.errors import ConfigError, DependencyError, ProcessingError, RaylaneError
from raylane.kafka.deadletters import dlq_record
from raylane.kafka.offsets import commit_owned, next_offsets
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.kafka.sidecar import close_clients, open_clients
from raylane.monitoring.tracing import record_span, span, trace_id_of

__all__ = ["ActionRunner", "build_runner", "dedupe_key"]

log = logging.getLogger("raylane.actions")

#: claim values: a handler is running (or died running), or it finished (ran or dead-lettered)
PENDING = b"pending"
DONE = b"done"


def dedupe_key(pipeline: str, handler: str, event_id: str) -> str:
    return f"raylane:actions:{pipeline}:{handler}:{event_id}"


class ActionRunner:
    """One consumer-group member running a pipeline's action handlers."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        bootstrap: str,
        redis: aioredis.Redis,
        redis_url: str,
        client_id: str | None = None,
    ) -> None:
        if cfg.actions is None or not cfg.actions.topics:
            raise ConfigError(
                f"pipeline {cfg.name} has no actions.topics; add args.actions", stage="config"
            )
        self.cfg = cfg
        self.actions: ActionsConfig = cfg.actions
        self.bootstrap = bootstrap
        self.redis = redis
        self.redis_url = redis_url
        self.client_id = client_id or f"raylane-{cfg.name}-actions"
        self._registry = open_registry(cfg.schema_registry)
        self.topics: dict[str, ActionTopic] = {t.topic: t for t in self.actions.topics}
        self.codecs = {
            t.topic: Codec.for_contract(t.contract, self._registry) for t in self.actions.topics
        }
        self.handlers: dict[str, list[Handler]] = {
            t.topic: [self._handler(t, h) for h in t.handlers] for t in self.actions.topics
        }
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self.stats: dict[str, Any] = {
            "events": 0,
            "done": 0,
            "failed": 0,
            "duplicate": 0,
            "errors": 0,
            "dlq": 0,
            "batches": 0,
            "last_error": None,
        }

    @property
    def group_id(self) -> str:
        return self.actions.group_id or f"{self.cfg.name}-actions"

    def _handler(self, topic: ActionTopic, spec: Any) -> Handler:
        if isinstance(spec, WebhookAction):
            return WebhookHandler(spec, self.cfg.name)
        if isinstance(spec, PublishAction):
            return PublishHandler(
                spec,
                Codec.for_contract(spec.output.contract, self._registry),
                self.send,
                self.cfg.input.key_field,
            )
        return UpdateProfileHandler(spec, self.cfg.features.feast_repo, self.redis_url)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._consumer, self._producer = await open_clients(
            "action runner",
            "action",
            self.bootstrap,
            list(self.topics),
            group_id=self.group_id,
            client_id=self.client_id,
            fetch_max_wait_ms=10,
            max_poll_records=self.actions.max_batch_size,
        )

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self.stop()
        await close_clients("action runner", self._consumer, self._producer)
        for hs in self.handlers.values():
            for h in hs:
                closer = getattr(h, "aclose", None)
                if closer is not None:
                    await closer()

    async def run(self) -> None:
        """Consume until :meth:`stop`; a batch whose dependency failed is retried, not skipped."""
        assert self._consumer is not None, "call start() first"
        while not self._stop.is_set():
            got = await self._consumer.getmany(
                timeout_ms=200, max_records=self.actions.max_batch_size
            )
            records = [
                InRecord(
                    tp.topic,
                    tp.partition,
                    m.offset,
                    m.key,
                    m.value,
                    list(m.headers or ()),
                    int(m.timestamp or 0),
                )
                for tp, msgs in got.items()
                for m in msgs
            ]
            if not records:
                continue
            attempt = 0
            while True:
                try:
                    await self.handle(records)
                    break
                except DependencyError as e:
                    attempt += 1
                    self.stats["errors"] += 1
                    self.stats["last_error"] = str(e)
                    log.warning("action batch failed (%s, attempt %d); retrying it", e, attempt)
                    await asyncio.sleep(min(10.0, 0.1 * 2 ** min(attempt, 7)))
                    if self._stop.is_set():
                        return
            await self._commit(records)

    # -- one batch ------------------------------------------------------------------------

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send one record and wait for the broker's acknowledgement."""
        assert self._producer is not None
        try:
            await (await self._producer.send(topic, value, key=key, headers=headers))
        except Exception as e:
            raise DependencyError(f"publishing to {topic} failed: {e}", stage="action") from e

    async def handle(self, records: Sequence[InRecord]) -> None:
        """Run the handlers for every record (decode errors and given-up actions to the DLQ)."""
        self.stats["batches"] += 1
        for rec in records:
            topic = self.topics[rec.topic]
            oks, errs = self.codecs[rec.topic].decode_batch([rec.value or b""])
            cid = _correlation(rec, oks[0][1] if oks else None)
            if errs:
                await self._dead_letter(
                    topic, rec, dlq_record(rec, errs[0][1], cid, topic.dlq), None
                )
                continue
            ev = ActionEvent(rec.topic, oks[0][1], cid)
            self.stats["events"] += 1
            with record_span(rec, f"{rec.topic} process", **{"raylane.pipeline": self.cfg.name}):
                for h in self.handlers[rec.topic]:
                    await self._run_one(topic, rec, ev, h)

    async def _run_one(
        self, topic: ActionTopic, rec: InRecord, ev: ActionEvent, h: Handler
    ) -> None:
        lab = {"pipeline": self.cfg.name, "handler": h.name}
        key = dedupe_key(self.cfg.name, h.name, ev.event_id)
        try:
            claimed = await self.redis.set(key, PENDING, nx=True, ex=self.actions.claim_ttl_s)
            held = None if claimed else await self.redis.get(key)
            if isinstance(held, str):
                held = held.encode()
        except RedisError as e:
            raise DependencyError(f"action dedupe set in Redis failed: {e}", stage="action") from e
        if not claimed:
            if held == PENDING:  # another runner is on it, or one died mid-handler
                raise DependencyError(
                    f"action {h.name} of event {ev.event_id} is claimed but not done; "
                    f"waiting for the claim to finish or expire ({self.actions.claim_ttl_s} s)",
                    stage="action",
                )
            self.stats["duplicate"] += 1
            ACTION_METRICS.actions.labels(outcome="duplicate", **lab).inc()
            return
        try:
            with span(f"action {h.name}", **{"raylane.event_id": ev.event_id}):
                await h.run(ev)
        except DependencyError:
            ACTION_METRICS.actions.labels(outcome="error", **lab).inc()
            await self._release(key)  # not done: the batch's retry must run it again
            raise
        except Exception as e:
            err = (
                e
                if isinstance(e, RaylaneError)
                else ProcessingError(f"{type(e).__name__}: {e}", stage="action")
            )
            log.warning(
                "action %s gave up on %s (correlation %s, trace %s): %s: %s",
                h.name,
                rec.where,
                ev.correlation_id,
                trace_id_of(rec.headers) or "-",
                err.error_class,
                err,
                exc_info=not isinstance(e, RaylaneError),
            )
            self.stats["failed"] += 1
            ACTION_METRICS.actions.labels(outcome="failed", **lab).inc()
            await self._dead_letter(
                topic, rec, dlq_record(rec, err, ev.correlation_id, topic.dlq), h.name
            )
            await self._mark_done(key)
            return
        except BaseException:  # cancelled: not done, release for the next run
            await self._release(key)
            raise
        await self._mark_done(key)
        self.stats["done"] += 1
        ACTION_METRICS.actions.labels(outcome="done", **lab).inc()

    async def _mark_done(self, key: str) -> None:
        try:
            await self.redis.set(key, DONE, ex=self.actions.dedupe_ttl_s)
        except RedisError as e:  # the effect happened; the batch retry finds PENDING and waits
            raise DependencyError(
                f"action claim update in Redis failed: {e}", stage="action"
            ) from e

    async def _release(self, key: str) -> None:
        try:
            await self.redis.delete(key)
        except RedisError:
            log.exception("could not release the action claim %s (it expires by itself)", key)

    async def _dead_letter(
        self, topic: ActionTopic, rec: InRecord, out: OutRecord, handler: str | None
    ) -> None:
        headers = list(out.headers)
        if handler:
            headers.insert(0, ("raylane.action.handler", handler.encode()))
        await self.send(out.topic, out.key, out.value, headers)
        self.stats["dlq"] += 1
        ACTION_METRICS.dlq.labels(pipeline=self.cfg.name, topic=topic.topic).inc()

    async def _commit(self, records: Sequence[InRecord]) -> None:
        assert self._consumer is not None
        await commit_owned(self._consumer, next_offsets(records), "action runner")


def _correlation(rec: InRecord, event: Mapping[str, Any] | None) -> str:
    if event and event.get("correlation_id"):
        return str(event["correlation_id"])
    for name in ("raylane.correlation_id", "correlation_id"):
        raw = header(rec.headers, name)
        if raw:
            return raw.decode("utf-8", "replace")
    return str(uuid.uuid4())


def build_runner(
    cfg: PipelineConfig, *, settings: Any = None, redis: aioredis.Redis | None = None
) -> ActionRunner:
    """An action runner (not yet started) from the pipeline config and the environment."""
    from raylane.redis_clients import connect
    from raylane.settings import Settings

    settings = settings or Settings.load()
    client = redis or connect(settings.redis_url)
    return ActionRunner(
        cfg, bootstrap=settings.kafka_bootstrap, redis=client, redis_url=settings.redis_url
    )
