"""Tracing overhead: the batch core with OpenTelemetry tracing off and on, same run.

    .venv/bin/python bench/tracing_overhead.py [--batch 500] [--batches 200] [--rounds 5]

The fraud pipeline's real :class:`~raylane.pipeline.processor.BatchProcessor` (real codecs,
decision and output encoding; in-memory window/online sources and model, so no broker or
Redis noise) processes the same Avro batches, interleaved round by round:

* **off**: ``start_batch`` returns the no-op trace (what runs when no ``OTEL_*`` variable
  asks for tracing);
* **on, producers untraced**: an SDK tracer provider with a batch span processor and an
  exporter that drops what it is given (so the cost is raylane's spans, not a network);
  no event carries a ``traceparent``: a batch span and its stage spans, each output
  stamped with the batch's context;
* **on, every producer traced**: the same, every event carrying a sampled ``traceparent``:
  one more span (with its link) per event. Real producers sample; this is the worst case.

Prints µs per event (median over rounds), the ratios to off, and what tracing off adds
per batch timed alone; writes bench/results/tracing-overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from rich.console import Console
from rich.table import Table

from raylane.config import load_serve_config
from raylane.contracts import Codec
from raylane.kafka.records import InRecord
from raylane.monitoring import tracing
from raylane.testing import World
from raylane.testing.fakes import FakeModel, FakeOnline, FakeWindows, fake_pipeline

ROOT = Path(__file__).resolve().parents[1]
console = Console()


class _Drop(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def _batches(n_batches: int, size: int, traced: bool) -> list[list[InRecord]]:
    codec = Codec.for_contract("payments.initiated")
    world = World(seed=11, n_users=2000)
    events = [le.event for le in world.stream(start=0, rate=1000).take(n_batches * size)]
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    recs = [
        InRecord(
            "payments.initiated",
            0,
            i,
            e["user_id"].encode(),
            codec.encode(e),
            [("traceparent", parent.encode())] if traced else [],
            int(e["event_time"]),
        )
        for i, e in enumerate(events)
    ]
    return [recs[i : i + size] for i in range(0, len(recs), size)]


async def _run(processor: Any, batches: list[list[InRecord]], name: str) -> float:
    """µs per event for all batches (each batch traced as the ingress does)."""
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        trace = tracing.start_batch(b, name)
        result = await processor.process(b, trace)
        trace.stamp([], [])
        trace.end()
        n += result.n_scored
    return (time.perf_counter() - t0) * 1e6 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()

    from raylane.config import PipelineConfig

    doc, _ = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")
    cfg = PipelineConfig.from_args(doc["applications"][0]["args"])
    rows = {  # every user known to the online store, with one feature (the rest read NaN)
        "user_risk_profile": {f"u{i:05d}": {"risk_score": 0.1} for i in range(2000)}
    }
    pipe = fake_pipeline(
        cfg,
        model=FakeModel(lambda c: np.minimum(c["amount"] / 1000.0, 1.0)),
        windows=FakeWindows(cfg.features.windows),
        online=FakeOnline(cfg.features.online, rows),
    )
    plain = _batches(a.batches, a.batch, traced=False)
    batches = _batches(a.batches, a.batch, traced=True)
    exporter = _Drop()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))
    off: list[float] = []
    on_plain: list[float] = []
    on: list[float] = []

    async def rounds() -> None:
        await _run(pipe.processor, batches[:5], cfg.name)  # warm-up: imports, caches
        for r in range(a.rounds):
            tracing.use(None)
            off.append(await _run(pipe.processor, batches, cfg.name))
            tracing.use(provider)
            on_plain.append(await _run(pipe.processor, plain, cfg.name))
            on.append(await _run(pipe.processor, batches, cfg.name))
            tracing.use(None)
            console.print(
                f"round {r + 1}: off {off[-1]:.2f}, on (untraced producers) {on_plain[-1]:.2f}, "
                f"on (traced producers) {on[-1]:.2f} µs/event"
            )

    asyncio.run(rounds())
    # what tracing off adds per batch, timed alone: the no-op trace's calls the ingress makes
    tracing.use(None)
    reps = 100_000
    t0 = time.perf_counter()
    for _ in range(reps):
        nt = tracing.start_batch(batches[0], cfg.name)
        for stage in ("decode", "features", "score", "decision", "encode", "publish", "commit"):
            with nt.stage(stage):
                pass
        nt.stamp([], [])
        nt.end()
    off_batch_us = (time.perf_counter() - t0) * 1e6 / reps
    provider.force_flush()
    provider.shutdown()
    m_off, m_on = statistics.median(off), statistics.median(on)
    m_plain = statistics.median(on_plain)
    table = Table(title=f"tracing overhead, batch {a.batch} x {a.batches}, {a.rounds} rounds")
    for col in ("tracing", "µs per event (median)", "ratio to off"):
        table.add_column(col)
    table.add_row("off", f"{m_off:.2f}", "1.00")
    table.add_row("on, producers untraced", f"{m_plain:.2f}", f"{m_plain / m_off:.2f}")
    table.add_row("on, every producer traced", f"{m_on:.2f}", f"{m_on / m_off:.2f}")
    console.print(table)
    console.print(f"spans exported while on: {exporter.exported:,}")
    console.print(
        f"tracing off adds {off_batch_us:.2f} µs per batch ({off_batch_us / a.batch:.4f} µs per "
        f"event at batch {a.batch}; {100 * off_batch_us / a.batch / m_off:.3f} % of the off run)"
    )
    out = ROOT / "bench" / "results" / f"tracing-overhead-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "batch": a.batch,
                "batches": a.batches,
                "rounds": a.rounds,
                "off_us_per_event": off,
                "on_untraced_us_per_event": on_plain,
                "on_traced_us_per_event": on,
                "median_off": m_off,
                "median_on_untraced": m_plain,
                "median_on_traced": m_on,
                "spans_exported": exporter.exported,
                "off_path_us_per_batch": off_batch_us,
            },
            indent=2,
        )
    )
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
