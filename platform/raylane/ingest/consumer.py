"""The Kafka ingress loop: consume micro-batches, process, publish, then commit.

Delivery is at-least-once end to end:

* a batch's input offsets are committed only after every output and DLQ record
  of that batch is acknowledged by the broker;
* when a dependency fails (Redis, a model) the batch is neither published nor
  committed: the consumer pauses its partitions, waits for the breaker, and
  retries the same batch, instead of scoring on missing data or dropping it;
* on a rebalance the in-flight batch finishes (and commits) before partitions
  are given up.

Plain asyncio + aiokafka; the Ray Serve deployment in :mod:`raylane.serving`
only hosts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from raylane.config import PipelineConfig
from raylane.decision import DecisionEngine
from raylane.errors import DependencyError, RaylaneError
from raylane.ingest.offsets import commit_owned, next_offsets
from raylane.ingest.processor import (
    BatchProcessor,
    BatchResult,
    ModelClient,
    OutputCodec,
    ShadowJob,
)
from raylane.ingest.records import InRecord, OutRecord
from raylane.monitoring.metrics import METRICS, PipelineMetrics
from raylane.monitoring.shadow import compare, sample_job
from raylane.monitoring.shadow_stats import (
    LocalShadowWindow,
    batch_entry,
    record_batch,
    record_count,
)

__all__ = ["IngressLoop", "IngressStats"]

log = logging.getLogger("raylane.ingest")


@dataclass
class IngressStats:
    events_in: int = 0
    scored: int = 0
    dlq: int = 0
    batches: int = 0
    retries: int = 0
    commits: int = 0
    paused: bool = False
    decisions: dict[str, int] = field(default_factory=dict)
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_errors: int = 0
    shadow_timeouts: int = 0
    shadow_skipped: int = 0
    last_error: str | None = None
    assignment: list[str] = field(default_factory=list)
    model_version: str | None = None


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the in-flight batch finish and commit before partitions move elsewhere."""

    def __init__(self, loop: IngressLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.loop._inflight:
            await self.loop._settle()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.loop.stats.assignment = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)


class IngressLoop:
    """One consumer-group member running a pipeline."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        bootstrap: str,
        processor: BatchProcessor,
        shadows: Sequence[ModelClient] = (),
        shadow_codec: OutputCodec | None = None,
        metrics: PipelineMetrics = METRICS,
        client_id: str = "raylane-ingress",
        shadow_redis: Any = None,
    ) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.processor = processor
        self.shadows = list(shadows)
        self.shadow_codec = shadow_codec
        self.metrics = metrics
        self.client_id = client_id
        self.stats = IngressStats()
        self._inflight = asyncio.Lock()
        self._stop = asyncio.Event()
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._finishing: asyncio.Task[None] | None = None
        self._engine = DecisionEngine(cfg.decision)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._labels = {"pipeline": cfg.name}
        # shadows: their config by label, rolling windows (gauges), the shared aggregates' Redis
        self._shadow_cfg = {m.name: m for m in cfg.models.shadows}
        self._shadow_windows = {
            m.name: LocalShadowWindow(m.name, cfg.promotion.window) for m in cfg.models.shadows
        }
        self._shadow_redis = shadow_redis
        self._count_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        ing = self.cfg.ingress
        fetch_bytes = max(1 << 20, 2 * self.cfg.input.max_event_bytes + (64 << 10))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-producer",
            acks="all",
            linger_ms=1,
            max_batch_size=512 << 10,
            max_request_size=fetch_bytes,
            enable_idempotence=False,  # the embedded broker grants no producer ids; consumers dedupe by event_id
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=ing.group_id,
            enable_auto_commit=False,
            auto_offset_reset=ing.auto_offset_reset,
            fetch_max_wait_ms=ing.fetch_max_wait_ms,
            max_poll_records=ing.max_batch_size,
            max_partition_fetch_bytes=fetch_bytes,
            fetch_max_bytes=max(fetch_bytes, 52428800),
            session_timeout_ms=ing.session_timeout_ms,
            heartbeat_interval_ms=max(100, ing.session_timeout_ms // 5),
        )
        self._consumer.subscribe([self.cfg.input.topic], listener=_Revoke(self))
        try:
            await self._producer.start()
            await self._consumer.start()
        except Exception as e:
            await self._close_clients()
            raise DependencyError(
                f"cannot reach Kafka at {self.bootstrap}: {e}; is the broker up (`raylane dev status`)?",
                stage="ingest",
            ) from e

    async def run(self) -> None:
        """Consume until :meth:`stop`. Start first.

        Two batches overlap: batch N+1 is decoded, enriched and scored while batch N's
        outputs are being acknowledged and its offsets committed. Outputs still leave in
        batch order, and a batch is committed only after everything before it.
        """
        assert self._consumer is not None, "call start() first"
        while not self._stop.is_set():
            records = await self._next_batch()
            if not records:
                await self._settle()
                continue
            async with self._inflight:
                result, t_start = await self._process(records)
                await self._settle()  # batch N is out and committed before N+1 is published
                self._finishing = asyncio.get_running_loop().create_task(
                    self._finish(records, result, t_start)
                )
        await self._settle()

    async def _settle(self) -> None:
        """Wait until the last batch's outputs are acknowledged and its offsets committed."""
        if self._finishing is not None:
            await self._finishing

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop consuming, let in-flight work finish, leave the group cleanly."""
        self.stop()
        async with self._inflight:
            await self._settle()
        if self._shadow_tasks:
            await asyncio.wait(self._shadow_tasks, timeout=5)
        await self._close_clients()
        if self._shadow_redis is not None:
            try:
                await self._shadow_redis.aclose()
            except Exception:
                log.debug("closing the shadow aggregates' Redis client failed", exc_info=True)

    async def _close_clients(self) -> None:
        for c in (self._consumer, self._producer):
            if c is not None:
                try:
                    await c.stop()
                except Exception:  # closing is best effort; offsets were committed per batch
                    log.exception("error closing a Kafka client")

    # -- batches --------------------------------------------------------------------------

    async def _next_batch(self) -> list[InRecord]:
        """Up to max_batch_size records, waiting at most max_wait_ms after the first."""
        assert self._consumer is not None
        ing = self.cfg.ingress
        got = await self._consumer.getmany(timeout_ms=100, max_records=ing.max_batch_size)
        records = _flatten(got)
        if not records or len(records) >= ing.max_batch_size:
            return records
        if ing.max_wait_ms == 0:  # take what has already arrived, without waiting
            records.extend(
                _flatten(
                    await self._consumer.getmany(
                        timeout_ms=0, max_records=ing.max_batch_size - len(records)
                    )
                )
            )
            return records
        deadline = time.monotonic() + ing.max_wait_ms / 1000.0
        while len(records) < ing.max_batch_size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await self._consumer.getmany(
                timeout_ms=remaining_ms, max_records=ing.max_batch_size - len(records)
            )
            if not more:
                break
            records.extend(_flatten(more))
        return records

    async def _process(self, records: list[InRecord]) -> tuple[BatchResult, float]:
        """Process a batch, retrying (paused) until its dependencies answer."""
        attempt = 0
        t_start = time.time() * 1000
        while True:
            try:
                result = await self.processor.process(records)
            except Exception as e:
                if self._stop.is_set() and attempt > 0:
                    raise
                attempt += 1
                await self._back_off(e, attempt)
                continue
            if self._finishing is None or self._finishing.done():
                self._resume()
            return result, t_start

    async def _finish(self, records: list[InRecord], result: BatchResult, t_start: float) -> None:
        """Publish a processed batch (retrying until acknowledged), then commit its offsets."""
        attempt = 0
        t0 = time.perf_counter()
        while True:
            try:
                await self._publish(result.outputs + result.dlq)
                break
            except Exception as e:
                attempt += 1
                await self._back_off(e, attempt)
        result.stage_ms["publish_ms"] = (time.perf_counter() - t0) * 1000
        self._resume()
        t0 = time.perf_counter()
        await self._commit(records)
        result.stage_ms["commit_ms"] = (time.perf_counter() - t0) * 1000
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms]
        if stamps:  # how long the oldest record waited before its batch started
            result.stage_ms["queue_ms"] = max(0.0, t_start - min(stamps))
        self._account(result, records)
        if result.shadow is not None and self.shadows:
            self._start_shadows(result.shadow)

    def _resume(self) -> None:
        if self.stats.paused and self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())
            self.stats.paused = False
            self.metrics.paused.labels(**self._labels).set(0)

    async def _back_off(self, e: Exception, attempt: int) -> None:
        """Pause consumption and wait before retrying the same batch."""
        assert self._consumer is not None
        stage = e.stage if isinstance(e, RaylaneError) else "process"
        retriable = isinstance(e, RaylaneError) and e.retriable
        msg = f"batch failed at {stage} (attempt {attempt}): {e}"
        if retriable:
            log.warning("%s; pausing partitions and retrying", msg)
        else:
            log.exception("%s; unexpected, retrying without dropping the batch", msg)
        self.stats.last_error = msg
        self.stats.retries += 1
        self.metrics.retries.labels(stage=stage, **self._labels).inc()
        if not self.stats.paused:
            self._consumer.pause(*self._consumer.assignment())
            self.stats.paused = True
            self.metrics.paused.labels(**self._labels).set(1)
        delay = min(self.cfg.breaker.reset_timeout_s, 0.05 * 2 ** min(attempt, 10))
        await asyncio.sleep(delay)

    async def _publish(self, outs: list[OutRecord]) -> None:
        """Send everything without awaiting each send, then await all acknowledgements."""
        assert self._producer is not None
        if not outs:
            return
        futures = [
            await self._producer.send(o.topic, o.value, key=o.key, headers=o.headers) for o in outs
        ]
        try:
            await asyncio.gather(*futures)
        except Exception as e:
            raise DependencyError(f"publishing to Kafka failed: {e}", stage="publish") from e

    async def _commit(self, records: list[InRecord]) -> None:
        assert self._consumer is not None
        if not await commit_owned(self._consumer, next_offsets(records), "ingress"):
            return
        self.stats.commits += 1
        self.metrics.commits.labels(**self._labels).inc()

    def _account(self, result: BatchResult, records: list[InRecord]) -> None:
        m, lab, s = self.metrics, self._labels, self.stats
        s.events_in += result.n_in
        s.scored += result.n_scored
        s.dlq += len(result.dlq)
        s.batches += 1
        s.model_version = result.model_version or s.model_version
        m.events_in.labels(**lab).inc(result.n_in)
        m.batches.labels(**lab).inc()
        m.batch_size.labels(**lab).observe(result.n_in)
        for d, n in result.decisions.items():
            s.decisions[d] = s.decisions.get(d, 0) + n
            m.scored.labels(decision=d, **lab).inc(n)
        for cls, n in result.dlq_by_class.items():
            m.dlq.labels(error_class=cls, **lab).inc(n)
        for stage, ms in result.stage_ms.items():
            m.stage_ms.labels(stage=stage, **lab).observe(ms)
        now_ms = time.time() * 1000
        hist = m.e2e_ms.labels(**lab)
        for r in records:
            if r.timestamp_ms:
                hist.observe(max(0.0, now_ms - r.timestamp_ms))

    # -- shadows: never on the critical path ----------------------------------------------

    def _start_shadows(self, job: ShadowJob) -> None:
        for client in self.shadows:
            lab = {"shadow": client.name, **self._labels}
            if len(self._shadow_tasks) >= self.cfg.ingress.max_shadow_inflight * len(self.shadows):
                self.stats.shadow_skipped += 1
                self.metrics.shadow_skipped.labels(**lab).inc()
                skip = asyncio.get_running_loop().create_task(self._count(client.name, "skipped"))
                self._count_tasks.add(skip)  # held until done (the loop keeps weak references only)
                skip.add_done_callback(self._count_tasks.discard)
                continue
            task = asyncio.get_running_loop().create_task(self._shadow(client, job, lab))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, client: ModelClient, job: ShadowJob, lab: dict[str, str]) -> None:
        reason = "error"
        mcfg = self._shadow_cfg.get(client.name)
        fraction = mcfg.sample_fraction if mcfg is not None else 1.0
        try:
            job = sample_job(job, fraction)
            if not job.events:
                return
            try:  # the shadow's own deadline, whatever the client does
                pred = await asyncio.wait_for(
                    client.predict(job.columns), mcfg.timeout_s if mcfg is not None else None
                )
            except TimeoutError as e:
                raise DependencyError(f"shadow {client.name} timed out", stage="shadow") from e
            recs, agree, delta = compare(
                job,
                pred,
                self._engine,
                self.cfg.name,
                primary_label=self.cfg.models.primary.name,
                shadow_label=client.name,
                sample_fraction=fraction,
            )
            if self.shadow_codec is not None and self.cfg.outputs.shadow is not None:
                topic = self.cfg.outputs.shadow.topic
                values = self.shadow_codec.encode_many(
                    [{f: r.get(f) for f in self.shadow_codec.field_names} for r in recs]
                )
                reason = "publish"
                await self._publish(
                    [
                        OutRecord(
                            topic,
                            str(ev.get(self.cfg.input.key_field, "")).encode(),
                            v,
                            [
                                ("correlation_id", str(ev["correlation_id"]).encode()),
                                ("event_id", str(ev.get("event_id", "")).encode()),
                            ],
                        )
                        for ev, v in zip(job.events, values, strict=True)
                    ]
                )
            self.stats.shadow_compared += len(recs)
            self.stats.shadow_agreed += agree
            self.metrics.shadow_compared.labels(**lab).inc(len(recs))
            self.metrics.shadow_agree.labels(**lab).inc(agree)
            h = self.metrics.shadow_abs_delta.labels(**lab)
            for d in delta.tolist():
                h.observe(d)
            if recs:
                reason = "aggregates"
                await self._aggregate(
                    client.name, batch_entry(recs, self.cfg.decision.default), lab
                )
        except Exception as e:
            if isinstance(e, DependencyError) and "timed out" in e.message:
                reason = "timeout"
                self.stats.shadow_timeouts += 1
            self.stats.shadow_errors += 1
            self.metrics.shadow_errors.labels(reason=reason, **lab).inc()
            log.warning("shadow %s failed for a batch (%s): %s", lab["shadow"], reason, e)
            await self._count(client.name, "timeouts" if reason == "timeout" else "errors")

    async def _aggregate(self, label: str, entry: dict[str, Any], lab: dict[str, str]) -> None:
        """Update this replica's gauges and the shared aggregates in Redis."""
        agg = self._shadow_windows[label].add(entry)
        m = self.metrics
        if agg.agreement_rate is not None:
            m.shadow_agreement_rate.labels(**lab).set(agg.agreement_rate)
            m.shadow_abs_delta_stat.labels(stat="mean", **lab).set(agg.mean_abs_delta or 0.0)
            m.shadow_abs_delta_stat.labels(stat="p95", **lab).set(agg.p95_abs_delta or 0.0)
            for role, rate, p50, p99 in (
                (
                    "primary",
                    agg.primary_flag_rate,
                    agg.primary_latency_p50_ms,
                    agg.primary_latency_p99_ms,
                ),
                (
                    "shadow",
                    agg.shadow_flag_rate,
                    agg.shadow_latency_p50_ms,
                    agg.shadow_latency_p99_ms,
                ),
            ):
                m.shadow_flag_rate.labels(role=role, **lab).set(rate or 0.0)
                m.shadow_latency_ms.labels(role=role, quantile="0.5", **lab).set(p50 or 0.0)
                m.shadow_latency_ms.labels(role=role, quantile="0.99", **lab).set(p99 or 0.0)
        await record_batch(self._redis(), self.cfg.name, label, entry)

    async def _count(self, label: str, what: str) -> None:
        try:
            await record_count(self._redis(), self.cfg.name, label, what)
        except Exception as e:
            log.warning("could not count a shadow %s in Redis: %s", what, e)

    def _redis(self) -> Any:
        if self._shadow_redis is None:
            import redis.asyncio as aioredis

            from raylane.settings import Settings

            self._shadow_redis = aioredis.from_url(Settings.load().redis_url)
        return self._shadow_redis


def _flatten(got: dict[Any, list[Any]]) -> list[InRecord]:
    out: list[InRecord] = []
    for tp, msgs in got.items():
        for m in msgs:
            out.append(
                InRecord(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=m.offset,
                    key=m.key,
                    value=m.value,
                    headers=list(m.headers or ()),
                    timestamp_ms=int(m.timestamp or 0),
                )
            )
    return out
