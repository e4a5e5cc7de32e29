"""The shadow runner: scores shadow models beside the primary, never on the critical path.

The ingress loop only :meth:`ShadowRunner.submit` s a :class:`~raylane.pipeline.ports.ShadowJob`
after a batch is committed. The runner samples the job per shadow, calls the shadow under its
own deadline, compares with the primary (:mod:`raylane.lifecycle.shadow`), publishes the
comparisons through the ingress' sink, and updates the replica's gauges and the aggregates in
Redis that the promotion gates read. A slow or failing shadow costs only its own comparisons,
which are counted by reason (``timeout`` as the typed :class:`ShadowTimeout`, ``error``,
``publish``, ``aggregates``); with too many jobs in flight a job is skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raylane.config import PipelineConfig
from raylane.errors import DependencyError
from raylane.kafka.records import OutRecord
from raylane.lifecycle.shadow import compare, sample_job
from raylane.lifecycle.shadow_stats import (
    LocalShadowWindow,
    batch_entry,
    record_batch,
    record_count,
)
from raylane.monitoring.metrics import METRICS, PipelineMetrics
from raylane.monitoring.tracing import linked_span
from raylane.pipeline.decision import DecisionEngine
from raylane.pipeline.ports import ModelClient, OutputCodec, ShadowJob
from raylane.sinks.base import Sink

__all__ = ["ShadowRunner", "ShadowStats", "ShadowTimeout"]

log = logging.getLogger("raylane.lifecycle")


class ShadowTimeout(DependencyError):
    """A shadow did not answer within its ``timeout_s``."""

    default_stage = "shadow"


@dataclass
class ShadowStats:
    compared: int = 0
    agreed: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0


class ShadowRunner:
    """Runs every shadow of a pipeline on the jobs the ingress submits."""

    def __init__(
        self,
        cfg: PipelineConfig,
        shadows: Sequence[ModelClient],
        *,
        sink: Sink | None = None,
        codec: OutputCodec | None = None,
        metrics: PipelineMetrics = METRICS,
        redis: Any = None,
    ) -> None:
        self.cfg = cfg
        self.shadows = list(shadows)
        self.sink = sink
        self.codec = codec
        self.metrics = metrics
        self.stats = ShadowStats()
        self._labels = {"pipeline": cfg.name}
        self._engine = DecisionEngine(cfg.decision)
        self._cfg = {m.name: m for m in cfg.models.shadows}
        self._windows = {
            m.name: LocalShadowWindow(m.name, cfg.promotion.window) for m in cfg.models.shadows
        }
        self._redis = redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._count_tasks: set[asyncio.Task[None]] = set()

    def __bool__(self) -> bool:
        return bool(self.shadows)

    def submit(self, job: ShadowJob) -> None:
        """Start each shadow on `job` in the background (or count it skipped when saturated)."""
        loop = asyncio.get_running_loop()
        limit = self.cfg.ingress.max_shadow_inflight * len(self.shadows)
        for client in self.shadows:
            lab = {"shadow": client.name, **self._labels}
            if len(self._tasks) >= limit:
                self.stats.skipped += 1
                self.metrics.shadow_skipped.labels(**lab).inc()
                self._hold(self._count_tasks, loop.create_task(self._count(client.name, "skipped")))
                continue
            self._hold(self._tasks, loop.create_task(self._run(client, job, lab)))

    @staticmethod
    def _hold(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        tasks.add(task)  # held until done (the loop keeps weak references only)
        task.add_done_callback(tasks.discard)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let running comparisons finish (up to `timeout_s`), then close the Redis client."""
        pending = self._tasks | self._count_tasks
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:
                log.debug("closing the shadow aggregates' Redis client failed", exc_info=True)

    async def _predict(self, client: ModelClient, job: ShadowJob) -> Any:
        mcfg = self._cfg.get(client.name)
        timeout = mcfg.timeout_s if mcfg is not None else None
        try:  # the shadow's own deadline, whatever the client does
            with linked_span(f"shadow {client.name}", job.trace_link, events=len(job.events)):
                return await asyncio.wait_for(client.predict(job.columns), timeout)
        except TimeoutError as e:
            raise ShadowTimeout(f"shadow {client.name} timed out after {timeout} s") from e

    async def _run(self, client: ModelClient, job: ShadowJob, lab: dict[str, str]) -> None:
        reason = "error"
        mcfg = self._cfg.get(client.name)
        fraction = mcfg.sample_fraction if mcfg is not None else 1.0
        try:
            job = sample_job(job, fraction)
            if not job.events:
                return
            pred = await self._predict(client, job)
            recs, agree, delta = compare(
                job,
                pred,
                self._engine,
                self.cfg.name,
                primary_label=self.cfg.models.primary.name,
                shadow_label=client.name,
                sample_fraction=fraction,
                event_time=self.cfg.input.event_time,
            )
            reason = "publish"
            await self._publish(job, recs)
            self.stats.compared += len(recs)
            self.stats.agreed += agree
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
        except Exception as e:  # a shadow must never hurt the primary path
            if isinstance(e, ShadowTimeout):
                reason = "timeout"
                self.stats.timeouts += 1
            self.stats.errors += 1
            self.metrics.shadow_errors.labels(reason=reason, **lab).inc()
            log.warning("shadow %s failed for a batch (%s): %s", lab["shadow"], reason, e)
            await self._count(client.name, "timeouts" if reason == "timeout" else "errors")

    async def _publish(self, job: ShadowJob, recs: list[dict[str, Any]]) -> None:
        out = self.cfg.outputs.shadow
        if self.codec is None or out is None or self.sink is None:
            return
        values = self.codec.encode_many(
            [{f: r.get(f) for f in self.codec.field_names} for r in recs]
        )
        key_field = self.cfg.input.key_field
        await self.sink.write(
            [
                OutRecord(
                    out.topic,
                    str(ev.get(key_field, "")).encode(),
                    v,
                    [
                        ("correlation_id", str(ev["correlation_id"]).encode()),
                        ("event_id", str(ev.get("event_id", "")).encode()),
                    ],
                )
                for ev, v in zip(job.events, values, strict=True)
            ]
        )

    async def _aggregate(self, label: str, entry: dict[str, Any], lab: dict[str, str]) -> None:
        """Update this replica's gauges and the shared aggregates in Redis."""
        agg = self._windows[label].add(entry)
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
        await record_batch(self.redis(), self.cfg.name, label, entry)

    async def _count(self, label: str, what: str) -> None:
        try:
            await record_count(self.redis(), self.cfg.name, label, what)
        except Exception as e:  # counting is best effort; the metric has it
            log.warning("could not count a shadow %s in Redis: %s", what, e)

    def redis(self) -> Any:
        if self._redis is None:
            from raylane.redis_clients import connect

            self._redis = connect()
        return self._redis
