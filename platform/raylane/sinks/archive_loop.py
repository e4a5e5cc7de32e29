"""The archiver: consumes a pipeline's ``archive.topics`` and writes them to the archive.

:class:`ArchiveLoop` reads the topics in its own consumer group (off the scoring path),
buffers records and, when ``archive.max_file_records`` or ``archive.max_file_bytes`` are
pending or the oldest pending record has waited ``archive.flush_interval_s``, writes them
with :class:`~raylane.sinks.archive.ArchiveSink` (in a worker thread; the consumer keeps
heartbeating) and commits their offsets only then: a committed offset never passes what is
durably in the archive. A storage failure is retried with backoff, the records kept; after
a crash the uncommitted records are read and written again (at-least-once; readers
de-duplicate). Plain asyncio; :mod:`raylane.serving._monitors` hosts it in a Serve
deployment, like the drift monitor and the action runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from raylane.config import ArchiveConfig, PipelineConfig
from raylane.contracts import open_registry
from raylane.errors import ConfigError, DependencyError
from raylane.kafka.client import KafkaConnection
from raylane.kafka.offsets import commit_owned, next_offsets
from raylane.kafka.records import InRecord
from raylane.kafka.sidecar import close_clients, open_clients
from raylane.sinks.archive import (
    ArchiveSink,
    Decoder,
    archive_storage_options,
    contract_decoder,
    json_decoder,
)

__all__ = ["ARCHIVE_METRICS", "ArchiveLoop", "build_archiver"]

log = logging.getLogger("raylane.archive")

_POLL_RECORDS = 2000


class _ArchiveMetrics:
    def __init__(self) -> None:
        self.records = Counter(
            "raylane_archive_records_total",
            "Records written to the archive (re-writes after a restart included).",
            ["pipeline", "topic"],
        )
        self.files = Counter(
            "raylane_archive_files_total", "Archive files written.", ["pipeline", "topic"]
        )
        self.bytes = Counter(
            "raylane_archive_bytes_total",
            "Bytes of archive files written (compressed).",
            ["pipeline", "topic"],
        )
        self.errors = Counter(
            "raylane_archive_write_errors_total", "Failed archive writes (retried).", ["pipeline"]
        )
        self.pending = Gauge(
            "raylane_archive_pending_records",
            "Records read but not yet written (and so not committed).",
            ["pipeline"],
        )
        self.flush_s = Histogram(
            "raylane_archive_flush_seconds",
            "Time to write one flush's files.",
            ["pipeline"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )


#: Process-wide archive metric families (served by raylane.monitoring.metrics.serve_metrics).
ARCHIVE_METRICS = _ArchiveMetrics()


class ArchiveLoop:
    """One consumer-group member writing a pipeline's archive topics to Parquet."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        bootstrap: str | KafkaConnection,
        root: str,
        storage_options: Mapping[str, Any] | None = None,
        auto_offset_reset: str = "earliest",
        client_id: str | None = None,
    ) -> None:
        if cfg.archive is None or not cfg.archive.topics:
            raise ConfigError(
                f"pipeline {cfg.name} has no archive.topics; add args.archive", stage="config"
            )
        self.cfg = cfg
        self.archive: ArchiveConfig = cfg.archive
        self.bootstrap = bootstrap
        self.root = root
        self.auto_offset_reset = auto_offset_reset
        self.client_id = client_id or f"raylane-{cfg.name}-archive"
        registry = open_registry(cfg.schema_registry)
        decoders: dict[str, Decoder] = {
            t.topic: contract_decoder(t.contract, registry) if t.contract else json_decoder
            for t in self.archive.topics
        }
        self.sink = ArchiveSink(
            root,
            decoders,
            storage_options=storage_options,
            max_file_records=self.archive.max_file_records,
            max_file_bytes=self.archive.max_file_bytes,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._pending: list[InRecord] = []
        self._pending_bytes = 0
        self._pending_since: float | None = None
        self._last_progress = time.monotonic()
        self._outage = False
        self.stats: dict[str, Any] = {
            "records_in": 0,
            "records_written": 0,
            "files": 0,
            "bytes": 0,
            "flushes": 0,
            "pending": 0,
            "errors": 0,
            "last_error": None,
            "last_flush_at": None,
        }
        self._lab = {"pipeline": cfg.name}

    @property
    def group_id(self) -> str:
        return self.archive.group_id or f"{self.cfg.name}-archive"

    @property
    def topics(self) -> list[str]:
        return [t.topic for t in self.archive.topics]

    async def start(self) -> None:
        consumer, producer = await open_clients(
            "archiver",
            "archive",
            self.bootstrap,
            self.topics,
            group_id=self.group_id,
            client_id=self.client_id,
            auto_offset_reset=self.auto_offset_reset,
            fetch_max_wait_ms=100,
            max_poll_records=min(_POLL_RECORDS, self.archive.max_file_records),
        )
        await close_clients("archiver", producer)  # the archiver produces nothing
        self._consumer = consumer

    def stop(self) -> None:
        self._stop.set()

    async def close(self, *, flush: bool = True) -> None:
        """Stop; write and commit what is pending (unless `flush` is False, as in a crash),
        then close the consumer."""
        self.stop()
        if flush and self._pending and self._consumer is not None:
            try:
                await self._flush_once()
            except DependencyError as e:  # not committed: the group re-reads them
                log.warning("archiver of %s could not flush on close: %s", self.cfg.name, e)
        await close_clients("archiver", self._consumer)
        self._consumer = None

    async def run(self) -> None:
        """Consume until :meth:`stop`; a failed write is retried with backoff, never skipped."""
        assert self._consumer is not None, "call start() first"
        while not self._stop.is_set():
            got = await self._consumer.getmany(
                timeout_ms=200, max_records=min(_POLL_RECORDS, self.archive.max_file_records)
            )
            self._buffer(got)
            if self._due():
                await self._flush()

    def _buffer(self, got: Mapping[TopicPartition, list[Any]]) -> None:
        for tp, msgs in got.items():
            for m in msgs:
                self._pending.append(
                    InRecord(
                        tp.topic,
                        tp.partition,
                        m.offset,
                        m.key,
                        m.value,
                        list(m.headers or ()),
                        int(m.timestamp if m.timestamp is not None else 0),
                    )
                )
                self._pending_bytes += len(m.value or b"")
        n = sum(len(msgs) for msgs in got.values())
        if n:
            self.stats["records_in"] += n
            if self._pending_since is None:
                self._pending_since = time.monotonic()
        self.stats["pending"] = len(self._pending)
        ARCHIVE_METRICS.pending.labels(**self._lab).set(len(self._pending))

    def _due(self) -> bool:
        if not self._pending:
            return False
        if len(self._pending) >= self.archive.max_file_records:
            return True
        if self._pending_bytes >= self.archive.max_file_bytes:
            return True
        since = self._pending_since or time.monotonic()
        return time.monotonic() - since >= self.archive.flush_interval_s

    async def _flush(self) -> None:
        """Write and commit the pending records, retrying storage failures until stopped."""
        attempt = 0
        while self._pending and not self._stop.is_set():
            try:
                await self._flush_once()
                return
            except DependencyError as e:
                attempt += 1
                self._outage = True
                self.stats["errors"] += 1
                self.stats["last_error"] = str(e)
                ARCHIVE_METRICS.errors.labels(**self._lab).inc()
                log.warning("archiver of %s: %s (attempt %d); retrying", self.cfg.name, e, attempt)
                await asyncio.sleep(min(10.0, 0.2 * 2 ** min(attempt, 6)))

    async def _flush_once(self) -> None:
        async with self._flushing:
            batch = list(self._pending)
            if not batch:
                return
            t0 = time.perf_counter()
            written = await self.sink.write(batch)
            ARCHIVE_METRICS.flush_s.labels(**self._lab).observe(time.perf_counter() - t0)
            # everything in `batch` is durable now: drop it, then commit its offsets
            del self._pending[: len(batch)]
            self._pending_bytes = sum(len(r.value or b"") for r in self._pending)
            self._pending_since = time.monotonic() if self._pending else None
            await self._commit(next_offsets(batch))
            self._outage = False
            self._last_progress = time.monotonic()
            s = self.stats
            s["flushes"] += 1
            s["records_written"] += len(batch)
            s["files"] += len(written)
            s["bytes"] += sum(w.bytes for w in written)
            s["pending"] = len(self._pending)
            s["last_flush_at"] = time.time()
            for w in written:
                lab = {"topic": w.topic, **self._lab}
                ARCHIVE_METRICS.records.labels(**lab).inc(w.records)
                ARCHIVE_METRICS.files.labels(**lab).inc()
                ARCHIVE_METRICS.bytes.labels(**lab).inc(w.bytes)
            ARCHIVE_METRICS.pending.labels(**self._lab).set(len(self._pending))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        await commit_owned(self._consumer, offsets, "archiver")

    # -- liveness -------------------------------------------------------------------------

    @property
    def stall_timeout_s(self) -> float:
        """How long pending records may wait without a write before the loop is unhealthy."""
        return max(60.0, 3 * self.archive.flush_interval_s)

    def check_health(self) -> None:
        """Raise when records are pending and nothing was written for :attr:`stall_timeout_s`,
        unless the loop is waiting out a storage outage (its retries own that)."""
        now = time.monotonic()
        if not self._pending:
            self._last_progress = now  # idle is not stuck
            return
        if self._outage:
            return
        since = now - self._last_progress
        if since > self.stall_timeout_s:
            raise RuntimeError(
                f"archiver of {self.cfg.name} is stuck: {len(self._pending)} records pending "
                f"and nothing written for {since:.0f} s (limit {self.stall_timeout_s:g} s); "
                f"last error: {self.stats['last_error']}"
            )


def build_archiver(cfg: PipelineConfig, *, settings: Any = None) -> ArchiveLoop:
    """An archiver (not yet started) from the pipeline config and the environment."""
    from raylane.settings import Settings
    from raylane.sinks.archive_read import archive_root

    settings = settings or Settings.load()
    assert cfg.archive is not None
    return ArchiveLoop(
        cfg,
        bootstrap=settings.kafka_bootstrap,
        root=archive_root(cfg, settings),
        storage_options=archive_storage_options(cfg.archive.storage_options_env),
    )
