"""In-memory fakes of the batch core's ports and of the Kafka clients the ingress uses.

Unit tests run the real :class:`~raylane.pipeline.processor.BatchProcessor` and
:class:`~raylane.ingest.consumer.IngressLoop` on these: no broker, Redis, MLflow or Ray.
Each fake can be told to fail (a retriable :class:`~raylane.errors.DependencyError` the next
N calls, or any exception for chosen records), and each can append what it does to one
shared :class:`EventLog`, so a test asserts the order of things across fakes, e.g. that a
batch's outputs were acknowledged by the sink before its offsets were committed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from raylane.config import EventTimeConfig, OnlineFeatureView, PipelineConfig, WindowFeature
from raylane.errors import DependencyError, PublishRejected
from raylane.features.window import ReferenceWindowState
from raylane.kafka.records import Headers, OutRecord
from raylane.pipeline.ports import Prediction
from raylane.pipeline.processor import BatchProcessor

__all__ = [
    "EventLog",
    "FakeConsumer",
    "FakeModel",
    "FakeOnline",
    "FakePipeline",
    "FakeSink",
    "FakeWindows",
    "Outages",
    "fake_pipeline",
]

#: Decides per event (or per row of model input) whether a call fails: an exception or None.
RaiseFor = Callable[[Mapping[str, Any]], BaseException | None]
#: Decides per output record whether the sink refuses it for good: a Kafka error class name
#: (e.g. ``MessageSizeTooLargeError``) or None.
RejectFor = Callable[[OutRecord], str | None]
#: Scores a columnar batch: one float per row.
ScoreFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class EventLog:
    """An ordered record of what the fakes did, shared between them: ``(kind, detail)``."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []

    def add(self, kind: str, detail: Any = None) -> None:
        self.entries.append((kind, detail))

    def kinds(self) -> list[str]:
        """The kinds in order, e.g. ``["predict", "write", "commit", ...]``."""
        return [k for k, _ in self.entries]

    def of(self, kind: str) -> list[Any]:
        """The details of every entry of `kind`, in order."""
        return [d for k, d in self.entries if k == kind]

    def positions(self, kind: str) -> list[int]:
        """Indices in :attr:`entries` of every entry of `kind`."""
        return [i for i, (k, _) in enumerate(self.entries) if k == kind]

    def __len__(self) -> int:
        return len(self.entries)


class Outages:
    """Injected dependency outages: skip `after` calls, then fail the next `times` calls."""

    def __init__(self, what: str, stage: str, times: int = 0) -> None:
        self.what = what
        self.stage = stage
        self.remaining = times
        self.skip = 0
        self.raised = 0

    def fail_next(self, times: int, *, after: int = 0) -> None:
        """Fail `times` calls, starting after `after` more calls have succeeded."""
        self.remaining = times
        self.skip = after

    def check(self) -> None:
        """Raise the injected DependencyError if this call is one that fails."""
        if self.remaining <= 0:
            return
        if self.skip > 0:
            self.skip -= 1
            return
        self.remaining -= 1
        self.raised += 1
        raise DependencyError(f"{self.what} is down (injected outage)", stage=self.stage)


def _raise_for_any(raise_for: RaiseFor | None, items: Iterable[Mapping[str, Any]]) -> None:
    if raise_for is None:
        return
    for item in items:
        err = raise_for(item)
        if err is not None:
            raise err


async def _maybe_await(res: Any) -> None:
    """Rebalance callbacks may be coroutines or plain functions, as aiokafka allows."""
    if inspect.isawaitable(res):
        await res


def _log(log: EventLog | None, kind: str, detail: Any = None) -> None:
    if log is not None:
        log.add(kind, detail)


# -- feature sources and model ----------------------------------------------------------------


class FakeWindows:
    """A :class:`~raylane.pipeline.ports.WindowSource` on the pure-Python reference state.

    `raise_for` is asked about each event of a call before any state changes; the first
    exception it returns is raised (e.g. a ``ContractError`` for one poison event).
    """

    def __init__(
        self,
        specs: Sequence[WindowFeature],
        *,
        raise_for: RaiseFor | None = None,
        fail_times: int = 0,
        log: EventLog | None = None,
        event_time: EventTimeConfig | None = None,
    ) -> None:
        self.state = ReferenceWindowState(specs, event_time)
        self.raise_for = raise_for
        self.outages = Outages("window features", "features", fail_times)
        self.log = log
        #: event ids of every call, in order (failed calls included)
        self.calls: list[list[str]] = []

    async def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        ids = [str(ev.get("event_id")) for ev in events]
        self.calls.append(ids)
        try:
            self.outages.check()
            _raise_for_any(self.raise_for, events)
        except BaseException as e:
            _log(self.log, "windows-fail", (ids, type(e).__name__))
            raise
        _log(self.log, "windows", ids)
        return self.state.update_and_read(events)


class FakeOnline:
    """An :class:`~raylane.pipeline.ports.OnlineSource` reading a dict.

    ``rows[view][entity_key][feature]``; a missing entity or feature reads as NaN, the way
    the Feast reader reports it. Columns are named ``<view>__<feature>``.
    """

    def __init__(
        self,
        views: Sequence[OnlineFeatureView],
        rows: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
        *,
        fail_times: int = 0,
        log: EventLog | None = None,
    ) -> None:
        self.views = list(views)
        self.rows: dict[str, dict[str, dict[str, float]]] = {
            view: {key: dict(feats) for key, feats in table.items()}
            for view, table in (rows or {}).items()
        }
        self.outages = Outages("online features", "features", fail_times)
        self.log = log
        self.calls: list[dict[str, list[str]]] = []

    async def read(self, entities: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
        self.calls.append({f: list(keys) for f, keys in entities.items()})
        try:
            self.outages.check()
        except DependencyError:
            _log(self.log, "online-fail")
            raise
        out: dict[str, np.ndarray] = {}
        for v in self.views:
            keys = entities[v.entity_field]
            table = self.rows.get(v.view, {})
            for feat, col in zip(v.features, v.columns(), strict=True):
                out[col] = np.array(
                    [float(table.get(k, {}).get(feat, np.nan)) for k in keys], dtype=np.float64
                )
        _log(self.log, "online", len(next(iter(entities.values()), ())))
        return out


def _rows(columns: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
    n = len(next(iter(columns.values()))) if columns else 0
    return [{c: float(v[i]) for c, v in columns.items()} for i in range(n)]


class FakeModel:
    """A :class:`~raylane.pipeline.ports.ModelClient` scoring with a function.

    `score` maps the batch's columns to one score per row (default: all 0.0).
    `raise_for` is asked about each row (a dict of column -> value); the first exception
    it returns is raised (a poison record). ``outages.fail_next(n)`` makes the next `n`
    calls raise a retriable DependencyError. While `gate` is set to an unset
    :class:`asyncio.Event`, calls wait for it (a batch held in flight).
    """

    def __init__(
        self,
        score: ScoreFn | None = None,
        *,
        name: str = "champion",
        model_name: str = "fraud",
        version: str = "1",
        raise_for: RaiseFor | None = None,
        fail_times: int = 0,
        log: EventLog | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.model_name = model_name
        self.version = version
        self.score = score
        self.raise_for = raise_for
        self.outages = Outages(f"model {name}", "score", fail_times)
        self.log = log
        self.gate = gate
        #: rows of every call, in order (failed calls included)
        self.batch_sizes: list[int] = []
        #: calls that raised (outages and poison rows)
        self.failures = 0

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        n = len(next(iter(columns.values()))) if columns else 0
        self.batch_sizes.append(n)
        _log(self.log, "predict-start", n)
        if self.gate is not None:
            await self.gate.wait()
        try:
            self.outages.check()
            if self.raise_for is not None:
                _raise_for_any(self.raise_for, _rows(columns))
        except BaseException as e:
            self.failures += 1
            _log(self.log, "predict-fail", (n, type(e).__name__))
            raise
        t0 = time.perf_counter()
        if self.score is None:
            scores = np.zeros(n, dtype=np.float64)
        else:
            scores = np.asarray(self.score(columns), dtype=np.float64)
        _log(self.log, "predict", n)
        return Prediction(
            scores=scores,
            model_name=self.model_name,
            model_version=self.version,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )


@dataclass
class FakePipeline:
    """A real :class:`BatchProcessor` of one config, wired to fakes (and the real codecs)."""

    cfg: PipelineConfig
    processor: BatchProcessor
    model: FakeModel
    windows: FakeWindows | None
    online: FakeOnline | None


def fake_pipeline(
    cfg: PipelineConfig,
    *,
    model: FakeModel | None = None,
    windows: FakeWindows | None = None,
    online: FakeOnline | None = None,
    log: EventLog | None = None,
) -> FakePipeline:
    """The processor of `cfg` with the codecs :func:`raylane.pipeline.wiring.codecs_for` builds
    and fakes for what it reads: the window and online sources default to empty fakes when
    `cfg` has those features; no circuit breakers (tests inject failures directly)."""
    from raylane.pipeline.wiring import codecs_for

    inp, outs = codecs_for(cfg)
    model = model or FakeModel(log=log)
    if windows is None and cfg.features.windows:
        windows = FakeWindows(cfg.features.windows, log=log, event_time=cfg.input.event_time)
    if online is None and cfg.features.online:
        online = FakeOnline(cfg.features.online, log=log)
    processor = BatchProcessor(
        cfg,
        input_codec=inp,
        output_codecs=outs,
        windows=windows,
        online=online,
        primary=model,
    )
    return FakePipeline(cfg, processor, model, windows, online)


# -- sink ---------------------------------------------------------------------------------------


class FakeSink:
    """A :class:`~raylane.sinks.base.Sink` that keeps what it acknowledged.

    Logs ``write-start`` when a write begins and ``write`` (with the records) when it is
    acknowledged. ``outages.fail_next(n)`` fails the next `n` writes with a retriable
    DependencyError; an unset `gate` holds acknowledgements until it is set. `reject_for`
    refuses chosen records for good, like Kafka refusing a record that is too large: the
    write acknowledges every other record (logged as ``write``), logs ``write-rejected``
    with the refused ones and raises PublishRejected naming their indices. Like a stopped
    Kafka producer, a closed sink refuses writes.
    """

    def __init__(
        self,
        *,
        fail_times: int = 0,
        log: EventLog | None = None,
        gate: asyncio.Event | None = None,
        reject_for: RejectFor | None = None,
    ) -> None:
        self.outages = Outages("sink", "publish", fail_times)
        self.log = log
        self.gate = gate
        self.reject_for = reject_for
        self.started = False
        self.closed = False
        #: write calls, failed and refused ones included
        self.attempts = 0
        #: acknowledged writes, in order
        self.writes: list[list[OutRecord]] = []
        #: records refused for good, in order
        self.rejected: list[OutRecord] = []

    async def start(self) -> None:
        self.started = True
        _log(self.log, "sink-start")

    async def write(self, records: Sequence[OutRecord]) -> None:
        self.attempts += 1
        if self.closed:
            _log(self.log, "write-refused", len(records))
            raise RuntimeError("FakeSink.write after close()")
        batch = list(records)
        _log(self.log, "write-start", batch)
        if self.gate is not None:
            await self.gate.wait()
        try:
            self.outages.check()
        except DependencyError:
            _log(self.log, "write-fail", batch)
            raise
        failed: dict[int, str] = {}
        if self.reject_for is not None:
            for i, r in enumerate(batch):
                err = self.reject_for(r)
                if err is not None:
                    failed[i] = err
        if not failed:
            self.writes.append(batch)
            _log(self.log, "write", batch)
            return
        acked = [r for i, r in enumerate(batch) if i not in failed]
        refused = [batch[i] for i in failed]
        self.writes.append(acked)
        self.rejected += refused
        _log(self.log, "write", acked)
        _log(self.log, "write-rejected", refused)
        raise PublishRejected(
            f"FakeSink refused {len(failed)} of {len(batch)} records for good (injected: "
            f"{sorted(set(failed.values()))})",
            failed=failed,
            stage="publish",
        )

    async def close(self) -> None:
        self.closed = True
        _log(self.log, "sink-close")

    @property
    def records(self) -> list[OutRecord]:
        """Every acknowledged record, in order."""
        return [r for w in self.writes for r in w]

    def on(self, topic: str) -> list[OutRecord]:
        """The acknowledged records of `topic`, in order."""
        return [r for r in self.records if r.topic == topic]


# -- consumer -----------------------------------------------------------------------------------


@dataclass
class _Partition:
    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)


class FakeConsumer:
    """The part of :class:`aiokafka.AIOKafkaConsumer` the ingress loop uses, in memory.

    Partitions are lists of records (:meth:`produce` appends). The consumer is the only
    group member: :meth:`start` assigns every partition of the subscribed topics, starting
    at the committed offset (else 0), and calls the listener's ``on_partitions_assigned``.
    :meth:`rebalance` revokes (awaiting ``on_partitions_revoked``), reassigns from the
    committed offsets, as a real member re-fetches, and calls ``on_partitions_assigned``.
    Paused partitions return nothing from :meth:`getmany`, nor does any while a rebalance
    is in progress. Logs ``fetch`` (records per partition), ``pause``, ``resume``, ``commit``
    (with the offsets), ``revoke``, ``revoked``, ``assigned``, ``consumer-stop``.
    """

    def __init__(
        self,
        partitions: Mapping[str, int],
        *,
        log: EventLog | None = None,
        max_per_fetch: int | None = None,
        commit_failures: int = 0,
    ) -> None:
        self.log = log
        self.max_per_fetch = max_per_fetch
        self.commit_failures = commit_failures
        self._parts: dict[TopicPartition, _Partition] = {
            TopicPartition(t, p): _Partition() for t, n in partitions.items() for p in range(n)
        }
        self.topics: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self._assignment: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._position: dict[TopicPartition, int] = {}
        #: the group's committed offsets (next offset to read) per partition
        self.committed_offsets: dict[TopicPartition, int] = {}
        #: every successful commit, in order
        self.commits: list[dict[TopicPartition, int]] = []
        self.started = False
        self.stopped = False
        self._wakeup: asyncio.Event | None = None
        self._rebalancing = False

    # -- test controls --------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = 0,
        headers: Headers | None = None,
        timestamp_ms: int = 0,
    ) -> int:
        """Append a record to `topic[partition]`; returns its offset."""
        tp = TopicPartition(topic, partition)
        part = self._parts[tp]
        offset = len(part.records)
        part.records.append(
            ConsumerRecord(
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp=timestamp_ms,
                timestamp_type=0,
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=len(key) if key is not None else -1,
                serialized_value_size=len(value) if value is not None else -1,
                headers=tuple(headers or ()),
            )
        )
        self._wake()
        return offset

    def end_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to be produced, per partition."""
        return {tp: len(p.records) for tp, p in self._parts.items()}

    def uncommitted(self) -> int:
        """Records on all partitions at or after the committed offset."""
        return sum(n - self.committed_offsets.get(tp, 0) for tp, n in self.end_offsets().items())

    async def rebalance(self, assign: Iterable[TopicPartition] | None = None) -> None:
        """Revoke the whole assignment, then assign `assign` (default: the same partitions)."""
        old = set(self._assignment)
        _log(self.log, "revoke", sorted(old))
        self._rebalancing = True  # a member stops fetching before it is told of the revocation
        try:
            if self.listener is not None:
                await _maybe_await(self.listener.on_partitions_revoked(old))
            _log(self.log, "revoked", sorted(old))
            await self._assign(set(assign) if assign is not None else old)
        finally:
            self._rebalancing = False
            self._wake()

    # -- AIOKafkaConsumer ---------------------------------------------------------------------

    def subscribe(
        self, topics: Sequence[str], listener: ConsumerRebalanceListener | None = None
    ) -> None:
        unknown = [t for t in topics if not any(tp.topic == t for tp in self._parts)]
        if unknown:
            raise ValueError(f"FakeConsumer has no partitions of {unknown}")
        self.topics = list(topics)
        self.listener = listener

    async def start(self) -> None:
        if not self.topics:
            raise IllegalStateError("subscribe() before start()")
        self.started = True
        _log(self.log, "consumer-start")
        await self._assign({tp for tp in self._parts if tp.topic in self.topics})

    async def stop(self) -> None:
        self.stopped = True
        _log(self.log, "consumer-stop")
        self._wake()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused |= set(partitions) & self._assignment
        _log(self.log, "pause", sorted(partitions))

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused -= set(partitions)
        _log(self.log, "resume", sorted(partitions))
        self._wake()

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Records from the assigned, unpaused partitions; waits up to `timeout_ms` for one.

        A call waiting when :meth:`stop` is called returns empty; a call after it raises
        ConsumerStoppedError, as aiokafka's does.
        """
        if self.stopped:
            raise ConsumerStoppedError()
        if max_records is not None and max_records < 1:
            raise ValueError("`max_records` must be a positive Integer")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        while True:
            got = self._take(partitions, max_records)
            remaining = deadline - loop.time()
            if got or self.stopped or remaining <= 0:
                break
            wakeup = self._event()
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except TimeoutError:
                got = self._take(partitions, max_records)
                break
        if got:
            _log(self.log, "fetch", {tp: len(recs) for tp, recs in got.items()})
        return got

    async def commit(
        self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None
    ) -> None:
        if self.stopped:
            raise IllegalStateError("commit() on a stopped consumer")
        if offsets is None:
            plain = {tp: self._position[tp] for tp in self._assignment}
        else:
            plain = {
                tp: (o.offset if isinstance(o, OffsetAndMetadata) else int(o))
                for tp, o in offsets.items()
            }
        for tp in plain:
            if tp not in self._assignment:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        if self.commit_failures > 0:
            self.commit_failures -= 1
            _log(self.log, "commit-fail", dict(plain))
            raise KafkaError("commit failed (injected)")
        self.committed_offsets.update(plain)
        self.commits.append(dict(plain))
        _log(self.log, "commit", dict(plain))

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of `tp`, or None."""
        return self.committed_offsets.get(tp)

    # -- internals ----------------------------------------------------------------------------

    def _event(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _assign(self, tps: set[TopicPartition]) -> None:
        self._assignment = set(tps)
        self._paused = set()  # a new assignment starts unpaused, as in aiokafka
        self._position = {tp: self.committed_offsets.get(tp, 0) for tp in tps}
        _log(self.log, "assigned", sorted(tps))
        if self.listener is not None:
            await _maybe_await(self.listener.on_partitions_assigned(set(tps)))
        self._wake()

    def _take(
        self, only: Sequence[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        limit = max_records if max_records is not None else 500
        if self.max_per_fetch is not None:
            limit = min(limit, self.max_per_fetch)
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        if self._rebalancing:
            return out
        for tp in sorted(self._assignment):
            if limit <= 0:
                break
            if tp in self._paused or (only and tp not in only):
                continue
            pos = self._position[tp]
            recs = self._parts[tp].records[pos : pos + limit]
            if recs:
                out[tp] = recs
                self._position[tp] = pos + len(recs)
                limit -= len(recs)
        return out
