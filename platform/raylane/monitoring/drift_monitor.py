"""The drift monitor: consumes a pipeline's scored stream, publishes ``model.drift`` events.

:class:`DriftMonitor` is the plain-Python part: it windows scored events
(:class:`~raylane.monitoring.drift.WindowBuffer`), loads the reference sample logged with
the model version that scored each window, evaluates the window with Evidently, saves the
HTML report of a drifting window, builds its ``model.drift`` event and keeps the drift
state (:mod:`raylane.monitoring.drift_state`). :class:`DriftLoop` runs it over Kafka in its
own consumer group, off the scoring path: it reads ``outputs.scored`` after the ingress
has published it, evaluates windows in a worker thread (the consumer keeps heartbeating),
publishes drift events and commits offsets after they are acknowledged. Offsets of a
partly filled window are committed too: after a restart the monitor starts a fresh window
rather than re-reading old events (monitoring is best effort; scoring never waits on it).

Reports take bounded disk: after writing one, the monitor deletes the reports of its folder
beyond the newest ``drift.report_keep`` and those older than ``drift.report_max_age_s``
(:func:`prune_reports`; only files named like its reports, nothing else in the folder). The
``report_uri`` of a ``model.drift`` event whose report was deleted no longer resolves; the
event itself keeps the verdict and the drifted columns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from raylane.config import DriftConfig, PipelineConfig
from raylane.contracts import Codec, open_registry
from raylane.errors import ConfigError, DependencyError
from raylane.kafka.offsets import commit_owned
from raylane.kafka.sidecar import close_clients, open_clients
from raylane.monitoring.drift import DriftDetector, DriftResult, Window, WindowBuffer
from raylane.monitoring.drift_state import (
    DriftState,
    iso_ms,
    now_iso,
    record_window_async,
    write_state_async,
)

__all__ = [
    "DRIFT_METRICS",
    "REPORT_NAME",
    "DriftLoop",
    "DriftMonitor",
    "Evaluation",
    "ReferenceLoader",
    "mlflow_reference",
    "prune_reports",
    "report_dir_for",
]

log = logging.getLogger("raylane.drift")

#: (model_name, model_version) -> reference sample (features + prediction column).
ReferenceLoader = Callable[[str, str], pd.DataFrame]

#: The names :meth:`DriftMonitor.evaluate` gives reports:
#: ``<model>-v<version>-<window end, e.g. 2026-11-28T061820.123000Z>-<event id[:8]>.html``.
REPORT_NAME = re.compile(r".+-v[0-9A-Za-z._]+-\d{4}-\d{2}-\d{2}T\d{6}(?:\.\d+)?Z-[0-9a-f]{8}\.html")


class _DriftMetrics:
    def __init__(self) -> None:
        self.events = Counter(
            "raylane_drift_events_in_total",
            "Scored events seen by the drift monitor.",
            ["pipeline"],
        )
        self.windows = Counter(
            "raylane_drift_windows_total", "Windows evaluated, by verdict.", ["pipeline", "verdict"]
        )
        self.share = Gauge(
            "raylane_drift_share", "Drifted column share of the latest window.", ["pipeline"]
        )
        self.open = Gauge("raylane_drift_open", "1 while a drift alert is open.", ["pipeline"])
        self.column_score = Gauge(
            "raylane_drift_column_score",
            "Test score of each compared column in the latest window (PSI, p-value, ... as "
            "the column's test defines it).",
            ["pipeline", "column"],
        )
        self.eval_s = Histogram(
            "raylane_drift_evaluation_seconds",
            "Time to evaluate one window.",
            ["pipeline"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )


#: Process-wide drift metric families (served by raylane.monitoring.metrics.serve_metrics).
DRIFT_METRICS = _DriftMetrics()


@dataclass(frozen=True)
class Evaluation:
    """One evaluated window: the verdict, its drift event (if it drifted) and the new state."""

    window: Window
    result: DriftResult
    state: DriftState
    event: dict[str, Any] | None
    report: Path | None

    def record(self) -> dict[str, Any]:
        """What the window list in Redis keeps of this window (the dashboard's drift page)."""
        w, r = self.window, self.result
        return {
            "model_name": w.model_name,
            "model_version": w.model_version,
            "window_start": iso_ms(w.start_ms or 0),
            "window_end": iso_ms(w.end_ms or 0),
            "count": w.count,
            "drift_share": float(r.drift_share),
            "threshold": float(r.threshold),
            "drifted": bool(r.drifted),
            "open": bool(self.state.open),
            "columns": [c.as_record() for c in r.columns],
            "report": self.report.name if self.report is not None else None,
        }


def mlflow_reference(tracking_uri: str | None = None) -> ReferenceLoader:
    """Reference samples from the MLflow registry (``models:/<name>/<version>``)."""

    def load(name: str, version: str) -> pd.DataFrame:
        from raylane.registry import load_reference

        return load_reference(f"models:/{name}/{version}", tracking_uri=tracking_uri)

    return load


class DriftMonitor:
    """Windows, Evidently verdicts, drift events and the open/clear state of one pipeline."""

    def __init__(
        self, cfg: PipelineConfig, reference: ReferenceLoader, *, report_dir: Path
    ) -> None:
        if cfg.drift is None:
            raise ConfigError(
                f"pipeline {cfg.name} has no drift section; add args.drift", stage="config"
            )
        self.cfg = cfg
        self.drift: DriftConfig = cfg.drift
        self.reference = reference
        self.report_dir = report_dir
        self._detectors: dict[tuple[str, str], DriftDetector] = {}
        self._columns: list[str] = list(self.drift.columns or cfg.features.columns())
        self.buffer = WindowBuffer(
            self._columns,
            self.drift.prediction_column,
            size=self.drift.window_size,
            span_s=self.drift.window_s,
            min_size=self.drift.min_window_size,
            event_time=cfg.input.event_time,
        )
        self.open = False
        self._clean_run = 0
        self.evaluations = 0

    def add(self, events: Sequence[Mapping[str, Any]]) -> list[Window]:
        """Add scored events; returns the windows they closed (cheap, no evaluation)."""
        closed: list[Window] = []
        for ev in events:
            closed += self.buffer.add(ev)
        return closed

    def detector(self, name: str, version: str) -> DriftDetector:
        key = (name, version)
        det = self._detectors.get(key)
        if det is None:
            ref = self.reference(name, version)
            cols = list(self.drift.columns) or [c for c in self._columns if c in ref.columns]
            det = DriftDetector(
                ref,
                cols,
                self.drift.prediction_column,
                drift_share=self.drift.drift_share,
                per_column_method=self._methods(cols),
                per_column_threshold=self.drift.per_column_threshold,
                source=f"the reference sample of models:/{name}/{version}",
            )
            self._detectors[key] = det
        return det

    def warm(self, name: str, version: str) -> None:
        """Pay the first window's one-off costs now: load the reference of (name, version),
        test a slice of it against itself, import Evidently's report.

        The imports behind a first evaluation (Evidently, the MLflow client and the plugins
        its entry points pull in) cost tens of CPU-seconds on a 2-core box; paid when the
        first window closes, they compete with the scoring path under live traffic. The
        deployment calls this before it reports ready, so they are paid at deploy time.
        """
        det = self.detector(name, version)
        det.test_columns(det.reference.head(max(50, self.drift.min_window_size)))
        import evidently.presets  # noqa: F401 - the report of a drifted window needs it

    def _methods(self, cols: list[str]) -> dict[str, str]:
        methods = dict(self.drift.per_column_method)
        if self.drift.method:
            for c in [*cols, self.drift.prediction_column]:
                methods.setdefault(c, self.drift.method)
        return methods

    def evaluate(self, window: Window) -> Evaluation:
        """Compare one closed window with its model version's reference (CPU-heavy: ~1 s).

        A drifted window's HTML report is saved under `report_dir`, then older reports are
        pruned (``drift.report_keep``, ``drift.report_max_age_s``): the ``report_uri`` of an
        older event may no longer resolve.
        """
        det = self.detector(window.model_name, window.model_version)
        result, snapshot = det.evaluate(window.frame())
        self.evaluations += 1
        if result.drifted:
            self.open, self._clean_run = True, 0
        else:
            self._clean_run += 1
            if self._clean_run >= self.drift.clear_after:
                self.open = False
        state = DriftState(
            open=self.open,
            model_name=window.model_name,
            model_version=window.model_version,
            drift_share=result.drift_share,
            threshold=result.threshold,
            drifted_columns=[c.column for c in result.drifted_columns],
            window_end=iso_ms(window.end_ms or 0),
            updated_at=now_iso(),
        )
        if not result.drifted or snapshot is None:
            return Evaluation(window, result, state, None, None)
        event_id = str(uuid.uuid4())
        stamp = iso_ms(window.end_ms or 0).replace(":", "").replace("+0000", "Z")
        path = det.save_report(
            snapshot,
            self.report_dir / f"{window.model_name}-v{window.model_version}-"
            f"{stamp}-{event_id[:8]}.html",
        )
        prune_reports(
            self.report_dir,
            keep=self.drift.report_keep,
            max_age_s=self.drift.report_max_age_s,
            protect=path,
        )
        pred = result.prediction
        event = {
            "event_id": event_id,
            "correlation_id": window.last_correlation_id,
            "pipeline": self.cfg.name,
            "model_name": window.model_name,
            "model_version": window.model_version,
            "window_start": int(window.start_ms or 0),
            "window_end": int(window.end_ms or 0),
            "window_count": window.count,
            "reference_count": len(det.reference),
            "drift_share": float(result.drift_share),
            "threshold": float(result.threshold),
            "columns_compared": len(result.columns),
            "drifted_columns": [
                {
                    "column": c.column,
                    "test": c.method,
                    "score": float(c.score),
                    "threshold": float(c.threshold),
                }
                for c in result.drifted_columns
            ],
            "prediction_drift": bool(pred is not None and pred.drifted),
            "report_uri": path.resolve().as_uri(),
            "detected_at": int(time.time() * 1000),
        }
        return Evaluation(window, result, state, event, path)


class DriftLoop:
    """Runs a :class:`DriftMonitor` over the pipeline's scored topic (own consumer group)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        bootstrap: str,
        redis: aioredis.Redis,
        monitor: DriftMonitor,
        auto_offset_reset: str = "earliest",
        client_id: str | None = None,
    ) -> None:
        assert cfg.drift is not None
        self.cfg = cfg
        self.drift = cfg.drift
        self.bootstrap = bootstrap
        self.redis = redis
        self.monitor = monitor
        self.auto_offset_reset = auto_offset_reset
        self.client_id = client_id or f"raylane-{cfg.name}-drift"
        registry = open_registry(cfg.schema_registry)
        self._in = Codec.for_contract(cfg.outputs.scored.contract, registry)
        self._out = Codec.for_contract(self.drift.output.contract, registry)
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.published: list[dict[str, Any]] = []
        self._pending: list[Window] = []
        self._current: Evaluation | None = None
        self._published_current = False
        self.stats: dict[str, Any] = {
            "events": 0,
            "windows": 0,
            "drifted": 0,
            "undecodable": 0,
            "open": False,
            "last_error": None,
            # closed windows not yet evaluated, and the one being evaluated now (its model
            # version, size and last event time) since when (epoch s): how far behind the
            # monitor is, and where it is stuck if it is
            "pending": 0,
            "evaluating": None,
            "evaluating_since": None,
        }
        self._lab = {"pipeline": cfg.name}

    @property
    def group_id(self) -> str:
        return self.drift.group_id or f"{self.cfg.name}-drift"

    async def start(self) -> None:
        self._consumer, self._producer = await open_clients(
            "drift monitor",
            "drift",
            self.bootstrap,
            [self.cfg.outputs.scored.topic],
            group_id=self.group_id,
            client_id=self.client_id,
            auto_offset_reset=self.auto_offset_reset,
            fetch_max_wait_ms=50,
            max_poll_records=2000,
        )

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self.stop()
        await close_clients("drift monitor", self._consumer, self._producer)

    async def run(self) -> None:
        """Consume until :meth:`stop`. Redis and Kafka failures are retried (the window is kept);
        a window that cannot be evaluated (no reference, MLflow down) is logged and skipped."""
        assert self._consumer is not None, "call start() first"
        attempt = 0
        while not self._stop.is_set():
            got = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            if not got:
                continue
            self._ingest(got)
            while True:
                try:
                    await self._drain()
                    attempt = 0
                    break
                except DependencyError as e:  # Redis or Kafka: the window is kept and retried
                    attempt += 1
                    self.stats["last_error"] = str(e)
                    log.warning(
                        "drift monitor of %s: %s (attempt %d); retrying", self.cfg.name, e, attempt
                    )
                    await asyncio.sleep(min(10.0, 0.2 * 2 ** min(attempt, 6)))
                    if self._stop.is_set():
                        return
            await self._commit(got)

    def _ingest(self, got: Mapping[TopicPartition, list[Any]]) -> None:
        """Decode and window a poll's records (once: a retry re-evaluates, never re-adds)."""
        events: list[dict[str, Any]] = []
        for msgs in got.values():
            oks, errs = self._in.decode_batch([m.value or b"" for m in msgs])
            events += [ev for _, ev in oks]
            for (
                j,
                err,
            ) in errs:  # our own output: a bad record is a bug upstream, not a reason to stop
                self.stats["undecodable"] += 1
                m = msgs[j]
                log.error(
                    "drift monitor skips undecodable %s[%d]@%d: %s",
                    m.topic,
                    m.partition,
                    m.offset,
                    err,
                )
        events.sort(key=self.cfg.input.event_time.ms_or)
        self._pending += self.monitor.add(events)
        self.stats["pending"] = len(self._pending)
        self.stats["events"] += len(events)
        DRIFT_METRICS.events.labels(**self._lab).inc(len(events))

    async def _drain(self) -> None:
        """Evaluate closed windows in order; a window's verdict is computed once, its event
        published once and its state written, even when Redis or Kafka fail in between."""
        while self._pending:
            window = self._pending[0]
            if self._current is None:
                self._current = await self._evaluate(window)
            ev = self._current
            if ev is not None:
                if ev.event is not None and not self._published_current:
                    await self._publish(ev.event)
                    self._published_current = True
                    self.stats["drifted"] += 1
                    log.warning(
                        "drift in %s (model %s v%s): share %.2f >= %.2f, columns %s; report %s",
                        self.cfg.name,
                        window.model_name,
                        window.model_version,
                        ev.result.drift_share,
                        ev.result.threshold,
                        ev.state.drifted_columns,
                        ev.report,
                    )
                await record_window_async(self.redis, self.cfg.name, ev.record())
                await write_state_async(self.redis, self.cfg.name, ev.state)
            self._pending.pop(0)
            self.stats["pending"] = len(self._pending)
            self._current, self._published_current = None, False

    async def _evaluate(self, window: Window) -> Evaluation | None:
        t0 = time.perf_counter()
        self.stats["pending"] = len(self._pending)
        self.stats["evaluating"] = (
            f"v{window.model_version} {window.count} events to {window.end_ms}"
        )
        self.stats["evaluating_since"] = time.time()
        try:
            ev = await asyncio.to_thread(self._evaluate_nicely, window)
        except Exception as e:  # no reference, a column it lacks, MLflow down: name it, go on
            self.stats["evaluating"] = self.stats["evaluating_since"] = None
            log.exception(
                "drift monitor of %s could not evaluate a window of model %s v%s",
                self.cfg.name,
                window.model_name,
                window.model_version,
            )
            self.stats["last_error"] = f"{type(e).__name__}: {e}"
            return None
        self.stats["evaluating"] = self.stats["evaluating_since"] = None
        DRIFT_METRICS.eval_s.labels(**self._lab).observe(time.perf_counter() - t0)
        verdict = "drift" if ev.result.drifted else "clean"
        DRIFT_METRICS.windows.labels(verdict=verdict, **self._lab).inc()
        DRIFT_METRICS.share.labels(**self._lab).set(ev.result.drift_share)
        DRIFT_METRICS.open.labels(**self._lab).set(1 if ev.state.open else 0)
        for c in ev.result.columns:
            DRIFT_METRICS.column_score.labels(column=c.column, **self._lab).set(c.score)
        self.stats["windows"] += 1
        self.stats["open"] = ev.state.open
        self.stats["last_share"] = ev.result.drift_share
        return ev

    def _evaluate_nicely(self, window: Window) -> Evaluation:
        """Evaluate in this worker thread at the configured niceness: under CPU contention
        the scoring path wins, the monitor's Evidently runs wait."""
        nice = self.drift.niceness
        if nice > 0:
            tid = threading.get_native_id()
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:  # not permitted on this platform: run at normal priority
                pass
        return self.monitor.evaluate(window)

    async def _publish(self, event: dict[str, Any]) -> None:
        assert self._producer is not None
        value = self._out.encode(event)
        cid = str(event["correlation_id"]).encode()
        headers = [
            ("correlation_id", cid),
            ("raylane.correlation_id", cid),
            ("event_id", event["event_id"].encode()),
        ]
        try:
            await (
                await self._producer.send(
                    self.drift.output.topic, value, key=self.cfg.name.encode(), headers=headers
                )
            )
        except Exception as e:
            raise DependencyError(
                f"publishing a model.drift event failed: {e}", stage="drift"
            ) from e
        self.published.append(event)

    async def _commit(self, got: Mapping[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        offsets = {tp: msgs[-1].offset + 1 for tp, msgs in got.items() if msgs}
        await commit_owned(self._consumer, offsets, "drift monitor")


def prune_reports(
    folder: Path,
    *,
    keep: int,
    max_age_s: float | None = None,
    now: float | None = None,
    protect: Path | None = None,
) -> list[Path]:
    """Delete the drift reports in `folder` beyond the newest `keep` and those older than
    `max_age_s` (by modification time); returns the deleted paths.

    Only files named like the monitor's reports (:data:`REPORT_NAME`) are touched; `protect`
    (the report just written) never is. Give each pipeline its own ``drift.report_dir``:
    reports of pipelines sharing one folder count against the same limit. A file that
    cannot be deleted is logged and skipped (monitoring is best effort).
    """
    now = time.time() if now is None else now
    reports: list[tuple[float, str, Path]] = []
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        log.warning("cannot list drift reports in %s to prune them: %s", folder, e)
        return []
    for p in entries:
        if not REPORT_NAME.fullmatch(p.name) or not p.is_file():
            continue
        try:
            reports.append((p.stat().st_mtime, p.name, p))
        except OSError:  # deleted meanwhile
            continue
    reports.sort(reverse=True)  # newest first
    doomed = [p for _, _, p in reports[keep:]]
    if max_age_s is not None:
        doomed += [p for t, _, p in reports[:keep] if now - t > max_age_s]
    deleted: list[Path] = []
    for p in doomed:
        if protect is not None and p == protect:
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("cannot delete old drift report %s: %s", p, e)
            continue
        deleted.append(p)
    if deleted:
        log.info("deleted %d old drift report(s) in %s", len(deleted), folder)
    return deleted


def report_dir_for(cfg: PipelineConfig, home: Path) -> Path:
    """Where a pipeline's window reports go (drift.report_dir or $RAYLANE_HOME/drift/<pipeline>)."""
    assert cfg.drift is not None
    return Path(cfg.drift.report_dir) if cfg.drift.report_dir else home / "drift" / cfg.name
