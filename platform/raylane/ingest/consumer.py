"""The Kafka ingress loop: consume micro-batches, process, publish, then commit.

Delivery is at-least-once end to end:

* a batch's input offsets are committed only after every output and DLQ record
  of that batch is acknowledged by the broker;
* when a dependency fails (Redis, a model) the batch is neither published nor
  committed: the consumer pauses its partitions, waits for the breaker, and
  retries the same batch, instead of scoring on missing data or dropping it;
* a batch that fails for any other reason holds a poison record: it is retried
  ``ingress.poison_retries`` times, then split until the failing records stand alone;
  those are dead-lettered and the rest is scored (nothing a producer sends stops it);
* publishing is retried until acknowledged, except for outputs Kafka refuses for good
  (too large, an invalid or unauthorized topic): their inputs are dead-lettered instead
  (``PublishRejected``), so no output the broker cannot take stalls a partition;
* on a rebalance the in-flight batch finishes (and commits) before partitions
  are given up.

Plain asyncio; its Kafka clients come from :mod:`raylane.kafka` (or are injected: the
unit tests run it on in-memory fakes), its outputs go through a :class:`~raylane.sinks.Sink`,
and shadows run in a :class:`~raylane.lifecycle.shadow_runner.ShadowRunner`. The Ray
Serve deployment in :mod:`raylane.serving` only hosts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from raylane.config import PipelineConfig
from raylane.errors import DependencyError, PublishRejected, RaylaneError
from raylane.kafka import batches
from raylane.kafka.client import KafkaConnection, connection
from raylane.kafka.deadletters import DLQ_KEEP_BYTES, H_OFFSET, H_PARTITION, H_TOPIC, dlq_record
from raylane.kafka.offsets import commit_owned, next_offsets
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.lifecycle.shadow_runner import ShadowRunner, ShadowStats
from raylane.monitoring.metrics import METRICS, PipelineMetrics
from raylane.monitoring.tracing import NO_TRACE, AnyBatchTrace, start_batch, trace_id_of
from raylane.pipeline.processor import (
    CORRELATION_HEADER,
    GENERATED_HEADER,
    BatchProcessor,
    BatchResult,
    is_outage,
)
from raylane.sinks.base import Sink
from raylane.sinks.kafka import KafkaSink

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
    poison: int = 0
    isolations: int = 0
    #: record batches that could not be read (bomb, codec, CRC), dead-lettered and gone past
    unreadable_batches: int = 0
    #: outputs Kafka refused for good (their inputs were dead-lettered instead)
    rejected: int = 0
    #: dead letters Kafka refused for good (dropped, logged as errors)
    dead_letters_lost: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    shadow: ShadowStats = field(default_factory=ShadowStats)
    last_error: str | None = None
    assignment: list[str] = field(default_factory=list)
    model_version: str | None = None


class _Revoke(ConsumerRebalanceListener):
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
        kafka: str | KafkaConnection | None = None,
        processor: BatchProcessor,
        shadows: ShadowRunner | None = None,
        metrics: PipelineMetrics = METRICS,
        client_id: str = "raylane-ingress",
        consumer: AIOKafkaConsumer | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.cfg = cfg
        self.processor = processor
        self.metrics = metrics
        self.client_id = client_id
        self.stats = IngressStats()
        self._inflight = asyncio.Lock()
        self._stop = asyncio.Event()
        self._finishing: asyncio.Task[None] | None = None
        self._labels = {"pipeline": cfg.name}
        fetch_bytes = max(1 << 20, 2 * cfg.input.max_event_bytes + (64 << 10))
        self._fetch_bytes = fetch_bytes
        self.kafka = connection(kafka) if consumer is None or sink is None else None
        self._consumer = consumer
        self.sink: Sink = sink or KafkaSink(
            self.kafka,
            client_id=f"{client_id}-producer",
            linger_ms=1,
            max_batch_size=512 << 10,
            max_request_size=fetch_bytes,
        )
        self._last_commit = time.monotonic()
        self._committed: dict[tuple[str, int], int] = {}
        self._fetched_from: dict[tuple[str, int], int] = {}  # first offset fetched, per partition
        self._outage = False  # the last failure was a dependency outage
        self._quarantine = batches.Quarantine(cfg.input.max_decompressed_batch_bytes)
        self.shadows = shadows or ShadowRunner(cfg, (), metrics=metrics)
        self.shadows.sink = self.shadows.sink or self.sink
        self.shadows.stats = self.stats.shadow

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        ing = self.cfg.ingress
        if self._consumer is None:
            assert self.kafka is not None
            self._consumer = self.kafka.consumer(
                client_id=self.client_id,
                group_id=ing.group_id,
                auto_offset_reset=ing.auto_offset_reset,
                fetch_max_wait_ms=ing.fetch_max_wait_ms,
                max_poll_records=ing.max_batch_size,
                max_partition_fetch_bytes=self._fetch_bytes,
                fetch_max_bytes=max(self._fetch_bytes, 52428800),
                session_timeout_ms=ing.session_timeout_ms,
                heartbeat_interval_ms=max(100, ing.session_timeout_ms // 5),
            )
        self._consumer.subscribe([self.cfg.input.topic], listener=_Revoke(self))
        try:
            await self.sink.start()
            await self._consumer.start()
        except Exception as e:
            await self._close_clients()
            where = self.kafka.bootstrap if self.kafka is not None else "the broker"
            raise DependencyError(
                f"cannot reach Kafka at {where}: {e}; is the broker up (`raylane dev status`)?",
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
            for r in records:
                self._fetched_from.setdefault((r.topic, r.partition), r.offset)
            if not records:
                await self._settle()
                continue
            async with self._inflight:
                if self._stop.is_set():
                    break  # closed while the batch filled: not processed, not committed
                result, t_start, trace = await self._process(records)
                await self._settle()  # batch N is out and committed before N+1 is published
                self._finishing = asyncio.get_running_loop().create_task(
                    self._finish(records, result, t_start, trace)
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
        await self.shadows.close()
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._consumer is not None:
            try:
                await self._consumer.stop()
            except Exception:  # closing is best effort; offsets were committed per batch
                log.exception("error closing the Kafka consumer")
        await self.sink.close()

    # -- batches --------------------------------------------------------------------------

    async def _next_batch(self) -> list[InRecord]:
        """Up to max_batch_size records, waiting at most max_wait_ms after the first."""
        ing = self.cfg.ingress
        records = await self._fetch(100, ing.max_batch_size, fresh_budget=True)
        if not records or len(records) >= ing.max_batch_size:
            return records
        if ing.max_wait_ms == 0:  # take what has already arrived, without waiting
            if not self._quarantine.later:  # (unless the decompression budget is spent)
                records.extend(await self._fetch(0, ing.max_batch_size - len(records)))
            return records
        deadline = time.monotonic() + ing.max_wait_ms / 1000.0
        while len(records) < ing.max_batch_size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            if self._quarantine.later:  # the decompression budget is spent: score these
                break
            more = await self._fetch(remaining_ms, ing.max_batch_size - len(records))
            if not more:
                break
            records.extend(more)
        return records

    async def _fetch(
        self, timeout_ms: int, max_records: int, *, fresh_budget: bool = False
    ) -> list[InRecord]:
        """One ``getmany``, with decompression capped (per batch, and for all the fetches
        of one batch together: `fresh_budget` on the first) and unreadable record batches
        gone past: each comes back as one stand-in record, dead-lettered by the decode
        stage."""
        assert self._consumer is not None
        with batches.reading(self._quarantine, fresh_budget=fresh_budget) as q:
            got = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records = _flatten(got)
        skipped = q.take()
        if skipped:
            self.stats.unreadable_batches += len(skipped)
            for r in skipped:
                assert r.skipped is not None
                self.metrics.unreadable_batches.labels(
                    **self._labels, error_class=r.skipped.error.error_class
                ).inc()
            records.extend(skipped)
        return records

    async def _process(self, records: list[InRecord]) -> tuple[BatchResult, float, AnyBatchTrace]:
        """Process a batch: retry (paused) until its dependencies answer; when it fails for
        another reason, retry it ``poison_retries`` times, then isolate the poison record(s)."""
        attempt = 0
        failures = 0  # failures that were not dependency outages
        t_start = time.time() * 1000
        trace = start_batch(records, self.cfg.name)
        while True:
            isolating = failures > self.cfg.ingress.poison_retries
            try:
                if isolating:
                    result = await self.processor.isolate(records, trace)
                else:
                    result = await self.processor.process(records, trace)
            except BaseException as e:
                if not isinstance(e, Exception):  # cancelled: the batch is not finished
                    trace.end(e)
                    raise
                if self._stop.is_set() and attempt > 0:
                    trace.end(e)
                    raise
                attempt += 1
                if not is_outage(e):
                    failures += 1
                await self._back_off(e, attempt, failures)
                continue
            if isolating:
                self._isolated(records, result)
            if self._finishing is None or self._finishing.done():
                self._resume()
            return result, t_start, trace

    def _isolated(self, records: list[InRecord], result: BatchResult) -> None:
        poison = result.poison
        self.stats.isolations += 1
        self.stats.poison += poison
        self.metrics.isolations.labels(**self._labels).inc()
        log.warning(
            "batch %s..%s: isolated %d poison record(s) by splitting; %d of %d records scored",
            records[0].where,
            records[-1].where,
            poison,
            result.n_scored,
            len(records),
        )

    async def _finish(
        self,
        records: list[InRecord],
        result: BatchResult,
        t_start: float,
        trace: AnyBatchTrace = NO_TRACE,
    ) -> None:
        """Publish a processed batch (retrying until acknowledged), then commit its offsets."""
        try:
            t0 = time.perf_counter()
            with trace.stage("publish"):
                await self._publish(result)
            result.stage_ms["publish_ms"] = (time.perf_counter() - t0) * 1000
            self._resume()
            t0 = time.perf_counter()
            with trace.stage("commit"):
                await self._commit(records)
            result.stage_ms["commit_ms"] = (time.perf_counter() - t0) * 1000
        except BaseException as e:
            trace.end(e)
            raise
        trace.end()
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms]
        if stamps:  # how long the oldest record waited before its batch started
            result.stage_ms["queue_ms"] = max(0.0, t_start - min(stamps))
        self._account(result, records)
        if result.shadow is not None and self.shadows:
            self.shadows.submit(result.shadow)

    async def _publish(self, result: BatchResult) -> None:
        """Write the batch's outputs and dead letters; retry outages until acknowledged.

        Records Kafka refuses for good (:class:`~raylane.errors.PublishRejected`: too large,
        an invalid or unauthorized topic; every other record was acknowledged then) are not
        retried. A refused output is dropped and its input dead-lettered instead: a minimal
        dead letter (class ``PublishRejected``, stage ``publish``, the Kafka error named in
        the message, the value cut to ``DLQ_KEEP_BYTES``, oversized headers dropped), one per
        input, counted in ``raylane_publish_rejected_total{record="output"}``. A dead letter
        Kafka refuses (one of the batch's own or a minimal one) is not retried either, so it
        cannot loop: it is logged as an error, counted with ``record="dead_letter"`` and
        dropped, and the offsets are committed. Only an event that had already failed (bad
        input, or an output no broker takes) can be lost that way, never a valid event
        whose outputs the broker accepts.
        """
        pending = result.outputs + result.dlq
        n_out = len(result.outputs)  # pending[:n_out] are outputs, the rest dead letters
        attempt = 0
        refused = False
        while True:
            try:
                await self.sink.write(pending)
                break
            except PublishRejected as e:
                if not e.failed:  # names nothing: nothing can be dropped, so retry it all
                    attempt += 1
                    await self._back_off(e, attempt, publishing=True)
                    continue
                refused = True
                pending = self._refused(result, pending, n_out, e)
                n_out, attempt = 0, 0
                if not pending:
                    break
            except Exception as e:  # retry: the outputs are already computed
                attempt += 1
                await self._back_off(e, attempt, publishing=True)
        if refused:
            result.count_dead_letters()

    def _refused(
        self, result: BatchResult, pending: list[OutRecord], n_out: int, e: PublishRejected
    ) -> list[OutRecord]:
        """Drop what Kafka refused from `result`; the dead letters still to write."""
        lab = self._labels
        lost: set[int] = set()
        by_input: dict[tuple[str, int, int], tuple[InRecord, list[tuple[OutRecord, str]]]] = {}
        dropped: set[int] = set()
        for i, err in sorted(e.failed.items()):
            if not 0 <= i < len(pending):
                continue
            rec = pending[i]
            if i < n_out:
                dropped.add(i)
            if i < n_out and i < len(result.sources):
                src = result.sources[i]
                by_input.setdefault((src.topic, src.partition, src.offset), (src, []))[1].append(
                    (rec, err)
                )
                self.stats.rejected += 1
                self.metrics.publish_rejected.labels(error=err, record="output", **lab).inc()
                continue
            lost.add(id(rec))
            self.stats.dead_letters_lost += 1
            self.metrics.publish_rejected.labels(error=err, record="dead_letter", **lab).inc()
            log.error(
                "Kafka refused %s for good (%s); it is dropped and the batch committed: %s "
                "[%s, correlation_id=%s]",
                "an output with no recorded input"
                if i < n_out
                else f"a dead letter to {rec.topic}",
                err,
                e.message[:500],
                _source_of(rec),
                (header(rec.headers, CORRELATION_HEADER) or b"?").decode("utf-8", "replace"),
            )
        if dropped:
            keep = [j for j in range(len(result.outputs)) if j not in dropped]
            result.outputs = [result.outputs[j] for j in keep]
            result.sources = [result.sources[j] for j in keep if j < len(result.sources)]
        letters = [self._rejected_letter(src, outs) for src, outs in by_input.values()]
        result.dlq = [d for d in result.dlq if id(d) not in lost] + letters
        return letters

    def _rejected_letter(self, src: InRecord, outs: list[tuple[OutRecord, str]]) -> OutRecord:
        """The minimal dead letter of an input whose outputs Kafka refused for good."""
        first = outs[0][0]
        raw = header(first.headers, CORRELATION_HEADER)
        cid = raw.decode("utf-8", "replace") if raw else str(uuid.uuid4())
        generated = raw is None or header(first.headers, GENERATED_HEADER) == b"true"
        what = "; ".join(f"{o.topic} ({len(o.value)} B): {err}" for o, err in outs)
        err = PublishRejected(
            f"Kafka refused this event's output for good ({what}), so the event is "
            "dead-lettered and its partition goes on. Fix: for MessageSizeTooLargeError raise "
            "the topic's max.message.bytes (and the producer's max_request_size) or make the "
            "output smaller (input.max_string_chars bounds the strings it copies); for "
            "InvalidTopicError or TopicAuthorizationFailedError fix the output topic or its "
            "ACLs; then replay it with `raylane dlq replay`",
            stage="publish",
        )
        log.error(
            "%s -> %s: PublishRejected: %s [correlation_id=%s trace_id=%s]",
            src.where,
            self.cfg.input.dlq,
            what,
            cid,
            trace_id_of(src.headers) or "-",
        )
        return dlq_record(
            src, err, cid, self.cfg.input.dlq, generated=generated, max_bytes=DLQ_KEEP_BYTES
        )

    def _resume(self) -> None:
        if self.stats.paused and self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())
            self.stats.paused = False
            self.metrics.paused.labels(**self._labels).set(0)

    async def _back_off(
        self, e: Exception, attempt: int, failures: int = 0, *, publishing: bool = False
    ) -> None:
        """Pause consumption and wait before retrying the same batch (or its publishing)."""
        assert self._consumer is not None
        stage = e.stage if isinstance(e, RaylaneError) else "process"
        msg = f"batch failed at {stage} (attempt {attempt}): {e}"
        if publishing:
            log.warning("%s; retrying the publish of the computed outputs", msg)
        elif is_outage(e):
            log.warning("%s; pausing partitions and retrying", msg)
        elif failures > self.cfg.ingress.poison_retries:
            log.warning("%s; not an outage: splitting the batch to isolate the record(s)", msg)
        else:
            log.warning(
                "%s; not an outage: retry %d of %d, then the batch is split",
                msg,
                failures,
                self.cfg.ingress.poison_retries,
                exc_info=not isinstance(e, RaylaneError),
            )
        self.stats.last_error = msg
        self._outage = is_outage(e)
        self.stats.retries += 1
        self.metrics.retries.labels(stage=stage, **self._labels).inc()
        if not self.stats.paused:
            self._consumer.pause(*self._consumer.assignment())
            self.stats.paused = True
            self.metrics.paused.labels(**self._labels).set(1)
        delay = min(self.cfg.breaker.reset_timeout_s, 0.05 * 2 ** min(attempt, 10))
        await asyncio.sleep(delay)

    async def _commit(self, records: list[InRecord]) -> None:
        assert self._consumer is not None
        offsets = next_offsets(records)
        if not await commit_owned(self._consumer, offsets, "ingress"):
            return
        self._last_commit = time.monotonic()
        for tp, off in offsets.items():
            self._committed[(tp.topic, tp.partition)] = off
        self.stats.commits += 1
        self.metrics.commits.labels(**self._labels).inc()

    # -- liveness -------------------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        """Records not yet committed per owned partition (from the last fetch's high
        watermark); partitions whose high watermark is not known yet are left out."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[str, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            key = (tp.topic, tp.partition)
            done = self._committed.get(key, self._fetched_from.get(key))
            if done is None:
                continue  # nothing fetched from it yet: its lag is not ours to judge
            out[f"{tp.topic}[{tp.partition}]"] = max(0, high - done)
        return out

    def debug(self) -> dict[str, Any]:
        """The consumer's view of its partitions (position, high watermark, paused, whether
        the fetcher holds records for it) and the loop's counters: what to read when a
        replica is slow or stuck. Serve callers reach it as the deployment's ``debug`` method."""
        consumer = self._consumer
        if consumer is None:
            return {}
        # aiokafka keeps positions and its prefetch buffer in private state; read it
        # defensively, it is diagnostics only
        fetcher: Any = getattr(consumer, "_fetcher", None)
        buffered: dict[Any, Any] = getattr(fetcher, "_records", {}) or {}
        sub: Any = getattr(getattr(consumer, "_subscription", None), "subscription", None)
        assignment: Any = getattr(sub, "assignment", None)
        parts: dict[str, dict[str, Any]] = {}
        for tp in consumer.assignment():
            row: dict[str, Any] = {"highwater": consumer.highwater(tp)}
            try:
                state = assignment.state_value(tp)
                row["position"] = state.position if state.has_valid_position else None
                row["paused"] = state.paused
            except Exception:
                row["position"] = row["paused"] = None
            row["buffered"] = type(buffered[tp]).__name__ if tp in buffered else None
            parts[f"{tp.topic}[{tp.partition}]"] = row
        stats = {k: v for k, v in vars(self.stats).items() if k != "shadow"}
        return {
            "partitions": parts,
            "fetching_from_nodes": sorted(getattr(fetcher, "_in_flight", ()) or ()),
            "stats": stats,
            "seconds_since_commit": time.monotonic() - self._last_commit,
        }

    def check_health(self) -> None:
        """Raise when the loop owns pending input and has committed nothing for
        ``ingress.stall_timeout_s``, unless it is waiting out a dependency outage."""
        now = time.monotonic()
        since = now - self._last_commit
        lag = self.lag()
        pending = sum(lag.values())
        m, lab = self.metrics, self._labels
        m.seconds_since_commit.labels(**lab).set(since)
        for where, n in lag.items():
            m.consumer_lag.labels(partition=where, **lab).set(n)
        if pending == 0:
            self._last_commit = now  # idle is not stuck
            return
        if self.stats.paused and self._outage:
            return  # paused on purpose: the breaker and the retry loop own this
        if since > self.cfg.ingress.stall_timeout_s:
            log.error(
                "ingress of %s made no progress for %.0f s; where its tasks wait:\n%s",
                self.cfg.name,
                since,
                _task_stacks(),
            )
            raise RuntimeError(
                f"ingress of {self.cfg.name} is stuck: {pending} records pending on "
                f"{sorted(lag)} and no commit for {since:.0f} s "
                f"(ingress.stall_timeout_s = {self.cfg.ingress.stall_timeout_s:g}); "
                f"last error: {self.stats.last_error}"
            )

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


def _source_of(rec: OutRecord) -> str:
    """`topic[partition]@offset` of the input a dead letter names (or its own topic)."""
    topic = header(rec.headers, H_TOPIC)
    if topic is None:
        return rec.topic
    part, off = header(rec.headers, H_PARTITION) or b"?", header(rec.headers, H_OFFSET) or b"?"
    return f"{topic.decode()}[{part.decode()}]@{off.decode()}"


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


def _task_stacks(limit: int = 20) -> str:
    """Where each asyncio task of the running loop waits: its whole chain of awaits."""
    import traceback

    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # called outside the loop (a test, a thread)
        return "(no running event loop)"
    out = []
    for t in tasks:
        frames: list[tuple[Any, int]] = []
        coro: Any = t.get_coro()
        while coro is not None and len(frames) < limit:
            f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if f is not None:
                frames.append((f, f.f_lineno))
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        where = "".join(traceback.StackSummary.extract(frames).format())
        out.append(f"task {t.get_name()}:\n{where}")
    return "\n".join(out)
