"""How the broker's fetch holds up as a partition fills with small record batches.

    .venv/bin/python bench/broker_fetch.py [--steps 2000,5000,10000,15000,20000] [--timeout 20]

Writes single-record batches (one awaited send at a time, as a producer at a low rate
does) into a new one-partition topic on the configured broker (`RAYLANE_KAFKA_BOOTSTRAP`,
else the embedded stack's). At each step it measures two reads:

- **at head**: a consumer at the end of the partition, 200 new records produced: how long
  until all 200 arrive (what a pipeline that keeps up sees);
- **catch-up**: a consumer reading 2,000 records from the start of the partition (what a
  replica that restarted behind a backlog sees), as records/s.

A real Kafka serves both in milliseconds at any of these sizes. The embedded broker
(Tansu 0.6, memory storage) does not: see docs/reliability.md, "The embedded broker's
limit". Writes bench/results/broker-fetch-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console()


async def _read(
    bootstrap: str, tp: TopicPartition, *, start: int | None, n: int, timeout_s: float
) -> tuple[int, float]:
    """(records read, seconds) from `start` (None: the end, after `n` new ones are sent)."""
    from raylane.kafka.client import connection

    conn = connection(bootstrap)
    c: AIOKafkaConsumer = conn.consumer(
        group_id=None, fetch_max_wait_ms=5, request_timeout_ms=int(timeout_s * 1000) + 5000
    )
    await c.start()
    try:
        c.assign([tp])
        if start is None:
            await c.seek_to_end(tp)
            await c.position(tp)
            producer = conn.producer(linger_ms=0)
            await producer.start()
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    await (await producer.send(tp.topic, b"h" * 400, partition=tp.partition))
            finally:
                await producer.stop()
        else:
            c.seek(tp, start)
            t0 = time.perf_counter()
        got = 0
        while got < n and time.perf_counter() - t0 < timeout_s:
            batch = await c.getmany(timeout_ms=200, max_records=500)
            got += sum(len(v) for v in batch.values())
        return got, time.perf_counter() - t0
    finally:
        await c.stop()


async def main_async(steps: list[int], timeout_s: float) -> list[dict[str, Any]]:
    from raylane.kafka.admin import ensure_topics
    from raylane.kafka.client import connection
    from raylane.settings import Settings

    bootstrap = Settings.load().kafka_bootstrap
    topic = f"bench.broker-fetch.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=1)
    tp = TopicPartition(topic, 0)
    producer = connection(bootstrap).producer(linger_ms=0)
    await producer.start()
    rows: list[dict[str, Any]] = []
    written = 0
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("filling the partition", total=steps[-1])
            for step in steps:
                while written < step:
                    await (await producer.send(topic, b"x" * 400, partition=0))
                    written += 1
                    bar.advance(task)
                head, head_s = await _read(bootstrap, tp, start=None, n=200, timeout_s=timeout_s)
                written += 200
                back, back_s = await _read(bootstrap, tp, start=0, n=2000, timeout_s=timeout_s)
                rows.append(
                    {
                        "batches": step,
                        "head_read": head,
                        "head_s": head_s,
                        "catchup_read": back,
                        "catchup_per_s": back / back_s,
                    }
                )
    finally:
        await producer.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", default="2000,5000,10000,15000,20000")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds each read may take")
    a = ap.parse_args()
    steps = sorted(int(x) for x in a.steps.split(","))
    from raylane.settings import Settings

    console.print(f"broker: {Settings.load().kafka_bootstrap}")
    rows = asyncio.run(main_async(steps, a.timeout))
    table = Table(title="fetch vs. single-record batches in the partition")
    for col in ("batches in partition", "at head: 200 new records", "catch-up: 2,000 from start"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['batches']:,}",
            f"{r['head_read']}/200 in {r['head_s']:.2f} s",
            f"{r['catchup_read']:,} read, {r['catchup_per_s']:,.0f}/s",
        )
    console.print(table)
    out = ROOT / "bench" / "results" / f"broker-fetch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"timeout_s": a.timeout, "rows": rows}, indent=2))
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
