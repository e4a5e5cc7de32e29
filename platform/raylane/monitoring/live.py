"""What a person watching a pipeline wants to see, measured from outside it.

:class:`OutputWatcher` consumes a pipeline's output topics like any downstream
service would (counts, distinct event ids, event→scored latency, shadow
agreement); :func:`scrape` reads the ingress replicas' Prometheus metrics from
the file_sd targets. The demo's live view and the bench use both.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from raylane.config import PipelineConfig
from raylane.monitoring.metrics import target_files

__all__ = ["OutputWatcher", "WatchStats", "histogram_quantile", "scrape"]


@dataclass
class WatchStats:
    scored: int = 0
    flagged: int = 0
    dlq: int = 0
    shadow: int = 0
    shadow_agree: int = 0
    scored_ids: set[str] = field(default_factory=set)
    flagged_ids: set[str] = field(default_factory=set)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    all_latencies_ms: list[float] = field(default_factory=list)
    by_version: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: wall-clock time (time.time()) the first flagged record was received; None: none yet
    first_flagged_at: float | None = None

    def percentile(self, q: float, *, recent: bool = True) -> float:
        data = self.latencies_ms if recent else self.all_latencies_ms
        return float(np.percentile(np.fromiter(data, dtype=float), q)) if data else float("nan")

    @property
    def agreement(self) -> float:
        return self.shadow_agree / self.shadow if self.shadow else float("nan")


class OutputWatcher:
    """Consumes a pipeline's outputs from their current end and keeps live statistics."""

    def __init__(self, cfg: PipelineConfig, bootstrap: str, decoders: dict[str, Any]) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.decoders = decoders  # topic -> object with .decode(bytes) -> dict
        self.stats = WatchStats()
        self._flag_topics = {r.publish.topic for r in cfg.decision.rules if r.publish}
        self._shadow_topic = cfg.outputs.shadow.topic if cfg.outputs.shadow else None
        topics = {cfg.outputs.scored.topic, cfg.input.dlq, *self._flag_topics}
        if self._shadow_topic:
            topics.add(self._shadow_topic)
        self.topics = sorted(topics)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from raylane.kafka.client import connection

        self._consumer = connection(self.bootstrap).consumer(
            *self.topics, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=10
        )
        await self._consumer.start()
        # Pin the current end of every partition before traffic starts.
        deadline = time.monotonic() + 30
        while not self._consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        s = self.stats
        scored_topic = self.cfg.outputs.scored.topic
        while True:
            got = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now_ms = time.time() * 1000
            for tp, msgs in got.items():
                for m in msgs:
                    if tp.topic == scored_topic:
                        rec = self.decoders[tp.topic].decode(m.value)
                        s.scored += 1
                        s.scored_ids.add(rec["event_id"])
                        lat = now_ms - float(rec["event_time"])
                        s.latencies_ms.append(lat)
                        s.all_latencies_ms.append(lat)
                        v = str(rec.get("model_version"))
                        s.by_version[v] = s.by_version.get(v, 0) + 1
                    elif tp.topic in self._flag_topics:
                        rec = self.decoders[tp.topic].decode(m.value)
                        s.flagged += 1
                        s.flagged_ids.add(rec["event_id"])
                        if s.first_flagged_at is None:
                            s.first_flagged_at = now_ms / 1000
                    elif tp.topic == self._shadow_topic:
                        rec = self.decoders[tp.topic].decode(m.value)
                        s.shadow += 1
                        s.shadow_agree += bool(rec["agreement"])
                    else:
                        s.dlq += 1


def scrape(home: Path, timeout_s: float = 1.0, pipeline: str | None = None) -> dict[str, float]:
    """Sum of every raylane_* sample across the announced targets, keyed by name{labels}
    (without the `pipeline` label; with `pipeline` given, only that pipeline's samples and
    those without the label)."""
    out: dict[str, float] = {}
    for f in target_files(home):
        try:
            groups = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for g in groups:
            for target in g.get("targets", []):
                try:
                    with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout_s) as r:
                        text = r.read().decode()
                except (OSError, http.client.HTTPException, ValueError):
                    continue  # a replica that is gone or restarting, or its port reused
                for fam in text_string_to_metric_families(text):
                    if not fam.name.startswith("raylane_"):
                        continue
                    for smp in fam.samples:
                        if pipeline is not None and smp.labels.get("pipeline", pipeline) != (
                            pipeline
                        ):
                            continue
                        labels = ",".join(
                            f"{k}={v}" for k, v in sorted(smp.labels.items()) if k != "pipeline"
                        )
                        key = f"{smp.name}{{{labels}}}"
                        out[key] = out.get(key, 0.0) + float(smp.value)
    return out


def histogram_quantile(samples: dict[str, float], name: str, q: float, labels: str = "") -> float:
    """Prometheus-style quantile from cumulative `_bucket` samples (linear within a bucket)."""
    buckets = []
    for key, v in samples.items():
        if not key.startswith(f"{name}_bucket{{"):
            continue
        inner = key[len(name) + 8 : -1]
        parts = dict(p.split("=", 1) for p in inner.split(",") if p)
        le = parts.pop("le")
        if ",".join(f"{k}={v}" for k, v in sorted(parts.items())) != labels:
            continue
        buckets.append((float("inf") if le == "+Inf" else float(le), v))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for bound, c in buckets:
        if c >= rank:
            if bound == float("inf"):
                return prev_le
            return prev_le + (bound - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = bound, c
    return prev_le
