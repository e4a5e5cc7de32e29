"""Pipeline benchmark: raylane's batched path against the per-event baseline, same run.

    .venv/bin/python bench/pipeline.py [--events 30000] [--rate 1000] [--seconds 20]

1. Saturation: N events are produced as fast as possible into a fresh topic; the
   throughput is N over the span of the scored outputs' timestamps.
2. Latency at a fixed rate: events paced at --rate for --seconds; event→scored is
   the time a downstream consumer receives the scored record minus the moment the
   event was produced (its event_time).
3. Memory: RSS and PSS of every process of the stack (broker, Redis, MLflow, Ray
   with all its workers, this driver) while the app runs.
4. Baseline: one HTTP POST per event to a FastAPI service with the same model,
   one `get_online_features` call per event (bench/baseline_service.py), driven at
   saturation with 32 concurrent clients, and at the same fixed rate.

Prints a table and the ratios; writes bench/results/pipeline-<time>.json.
Needs the stack and bootstrap (it runs both if needed). Figures are machine-specific.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_configs" / "fraud.yaml"
console = Console()


def _isolated(suffix: str) -> dict[str, Any]:
    from raylane.testing.kafka import isolated_args

    return isolated_args(CONFIG, suffix)


async def _produce(
    bootstrap: str, topic: str, events: list[dict[str, Any]], rate: float | None
) -> float:
    """Produce `events`; paced at `rate`/s with event_time = send time, or flat out."""
    from raylane.contracts import Codec
    from raylane.kafka.producer import EventProducer

    codec = Codec.for_contract("payments.initiated")
    t0 = time.perf_counter()
    async with EventProducer(bootstrap, topic, codec, key_field="user_id") as prod:
        if rate is None:
            for i in range(0, len(events), 2000):
                await prod.send_many(events[i : i + 2000], wait=False)
            await prod.flush()
        else:
            start = time.perf_counter()
            sent = 0
            while sent < len(events):
                due = min(len(events), int((time.perf_counter() - start) * rate) + 1)
                now_ms = int(time.time() * 1000)
                batch = events[sent:due]
                for e in batch:
                    e["event_time"] = now_ms
                if batch:
                    await prod.send_many(batch, wait=False)
                sent = due
                await asyncio.sleep(0.002)
            await prod.flush()
    return time.perf_counter() - t0


async def _consume_scored(
    bootstrap: str, topic: str, n: int, timeout_s: float
) -> tuple[list[int], list[float]]:
    """Output timestamps (ms) and receive-minus-event_time latencies of the first n records."""
    from raylane.contracts import Codec
    from raylane.kafka.client import connection

    codec = Codec.for_contract("payments.scored")
    c = connection(bootstrap).consumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await c.start()
    stamps: list[int] = []
    lat: list[float] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(stamps) < n and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=100, max_records=10000)
            now = time.time() * 1000
            for msgs in got.values():
                for m in msgs:
                    stamps.append(m.timestamp)
                    lat.append(now - codec.decode(m.value)["event_time"])
    finally:
        await c.stop()
    return stamps, lat


def _stack_memory() -> dict[str, float]:
    from raylane import localstack

    pids = {os.getpid()}
    me = psutil.Process()
    pids |= {p.pid for p in me.children(recursive=True)}
    for s in localstack.status():
        if s.pid:
            pids.add(s.pid)
            with contextlib.suppress(psutil.Error):
                pids |= {c.pid for c in psutil.Process(s.pid).children(recursive=True)}
    for p in psutil.process_iter(["cmdline"]):  # Ray daemons and workers started by this driver
        cmd = " ".join(p.info.get("cmdline") or [])
        if (
            "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd
        ) and p.pid not in pids:
            pids.add(p.pid)
    rss = pss = 0
    for pid in pids:
        try:
            mi = psutil.Process(pid).memory_full_info()
            rss += mi.rss
            pss += getattr(mi, "pss", mi.rss)
        except psutil.Error:
            continue
    return {"processes": len(pids), "rss_gib": rss / 2**30, "pss_gib": pss / 2**30}


def bench_pipeline(args: argparse.Namespace, world: Any, bootstrap: str) -> dict[str, Any]:
    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_topics as all_topics

    res: dict[str, Any] = {}
    sat_args = _isolated("bench-sat-" + uuid.uuid4().hex[:6])
    lat_topic = "payments.initiated.bench-lat-" + uuid.uuid4().hex[:6]
    ensure_topics(bootstrap, [*all_topics(sat_args), lat_topic], partitions=4)
    with run_pipeline(CONFIG, overrides=sat_args) as running:
        running.wait_assigned()
        # warm-up: JIT-free, but connections, script loads and Feast caches
        warm = [le.event for le in world.stream(rate=world.nominal_rate, seed=1).take(2000)]
        asyncio.run(_produce(bootstrap, sat_args["input"]["topic"], warm, None))
        asyncio.run(
            _consume_scored(bootstrap, sat_args["outputs"]["scored"]["topic"], len(warm), 60)
        )

        events = [
            le.event for le in world.stream(rate=world.nominal_rate, seed=2).take(args.events)
        ]
        with console.status(f"saturation: {args.events:,} events"):

            async def sat() -> tuple[list[int], list[float]]:
                consumer = asyncio.create_task(
                    _consume_scored(
                        bootstrap,
                        sat_args["outputs"]["scored"]["topic"],
                        len(warm) + len(events),
                        300,
                    )
                )
                await _produce(bootstrap, sat_args["input"]["topic"], events, None)
                return await consumer

            stamps, _ = asyncio.run(sat())
        stamps = sorted(stamps[len(warm) :]) if len(stamps) > len(warm) else []
        if len(stamps) >= 2:
            span = (stamps[-1] - stamps[0]) / 1000
            res["saturation_events_per_s"] = (len(stamps) - 1) / span
        res["saturation_scored"] = len(stamps)
        res["memory"] = _stack_memory()

    # fixed-rate latency on a fresh deployment pointing at the latency topic
    lat_args = dict(sat_args, input={**sat_args["input"], "topic": lat_topic})
    lat_args["ingress"] = {**sat_args["ingress"], "group_id": "bench-lat-" + uuid.uuid4().hex[:6]}
    lat_args["outputs"] = {
        k: {**v, "topic": v["topic"] + "-lat"} for k, v in sat_args["outputs"].items()
    }
    ensure_topics(bootstrap, all_topics(lat_args), partitions=4)
    with run_pipeline(CONFIG, overrides=lat_args) as running:
        running.wait_assigned()
        n = int(args.rate * args.seconds)
        events = [le.event for le in world.stream(rate=world.nominal_rate, seed=3).take(n)]
        with console.status(f"latency: {n:,} events at {args.rate:g}/s"):

            async def lat() -> tuple[list[int], list[float]]:
                consumer = asyncio.create_task(
                    _consume_scored(
                        bootstrap, lat_args["outputs"]["scored"]["topic"], n, args.seconds + 120
                    )
                )
                await _produce(bootstrap, lat_topic, events, args.rate)
                return await consumer

            _, lats = asyncio.run(lat())
        from raylane.monitoring.live import histogram_quantile, scrape
        from raylane.settings import Settings

        m = scrape(Settings.load().home)
        res["stages_ms"] = {
            st[:-3]: {
                q: round(histogram_quantile(m, "raylane_stage_latency_ms", qq, f"stage={st}"), 2)
                for q, qq in (("p50", 0.5), ("p99", 0.99))
            }
            for st in (
                "queue_ms",
                "decode_ms",
                "window_ms",
                "online_ms",
                "features_ms",
                "score_ms",
                "encode_ms",
                "batch_ms",
                "publish_ms",
                "commit_ms",
            )
        }
        b, e = m.get("raylane_batches_total{}", 0.0), m.get("raylane_events_in_total{}", 0.0)
        res["mean_batch_size"] = round(e / b, 1) if b else None
        arr = np.array(lats[int(len(lats) * 0.1) :])  # drop the first 10 %: warm-up
        res["fixed_rate"] = args.rate
        res["latency_p50_ms"] = float(np.percentile(arr, 50))
        res["latency_p99_ms"] = float(np.percentile(arr, 99))
        res["latency_scored"] = len(lats)
    return res


async def _drive_http(
    url: str, events: list[dict[str, Any]], concurrency: int, rate: float | None
) -> tuple[float, list[float]]:
    import httpx

    lat: list[float] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    start = time.perf_counter()

    async def feeder() -> None:
        for i, e in enumerate(events):
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(e)
        for _ in range(concurrency):
            await queue.put({})

    async def worker(client: httpx.AsyncClient) -> None:
        while e := await queue.get():
            e = dict(e, event_time=int(time.time() * 1000))
            t0 = time.perf_counter()
            r = await client.post(url, json=e)
            r.raise_for_status()
            lat.append((time.perf_counter() - t0) * 1000)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(feeder(), *(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - start, lat


def bench_baseline(args: argparse.Namespace, world: Any) -> dict[str, Any]:
    port = 18765
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_service:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    res: dict[str, Any] = {}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("baseline service did not start") from None
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/score"
        events = [
            le.event
            for le in world.stream(rate=world.nominal_rate, seed=4).take(args.baseline_events)
        ]
        asyncio.run(_drive_http(url, events[:200], 8, None))  # warm-up
        with console.status(f"baseline saturation: {len(events):,} POSTs, 32 clients"):
            secs, _ = asyncio.run(_drive_http(url, events, 32, None))
        res["saturation_events_per_s"] = len(events) / secs
        n = int(min(args.rate, res["saturation_events_per_s"] * 0.8) * 10)
        rate = min(args.rate, res["saturation_events_per_s"] * 0.8)
        with console.status(f"baseline latency: {n:,} POSTs at {rate:.0f}/s"):
            _, lat = asyncio.run(_drive_http(url, events[:n], 64, rate))
        res["fixed_rate"] = rate
        res["latency_p50_ms"] = float(np.percentile(lat, 50))
        res["latency_p99_ms"] = float(np.percentile(lat, 99))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=30_000, help="events for the saturation run")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed rate for the latency run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    p.add_argument("--baseline-events", type=int, default=3000)
    p.add_argument("--skip-baseline", action="store_true")
    args = p.parse_args()

    from raylane import localstack
    from raylane.bootstrap import bootstrap
    from raylane.testing import World

    settings = localstack.up()
    bootstrap(CONFIG, quiet=True)
    meta = json.loads((settings.home / "world-fraud.json").read_text())
    world = World(seed=meta["seed"], n_users=meta["users"])

    ours = bench_pipeline(args, world, settings.kafka_bootstrap)
    base = {} if args.skip_baseline else bench_baseline(args, world)

    t = Table(title=f"bench/pipeline.py — {os.cpu_count()} cores")
    t.add_column("measure")
    t.add_column("raylane (batched)", justify="right")
    t.add_column("per-event baseline", justify="right")
    t.add_column("ratio", justify="right")

    def row(name: str, key: str, fmt: str, higher_better: bool) -> None:
        a, b = ours.get(key), base.get(key)
        ratio = ""
        if a and b:
            ratio = f"{(a / b if higher_better else b / a):.1f}×"
        t.add_row(
            name,
            fmt.format(a) if a is not None else "—",
            fmt.format(b) if b is not None else "—",
            ratio,
        )

    row("sustained events/s at saturation", "saturation_events_per_s", "{:,.0f}", True)
    row("fixed rate (events/s)", "fixed_rate", "{:,.0f}", True)
    row("latency p50 at fixed rate (ms)", "latency_p50_ms", "{:.1f}", False)
    row("latency p99 at fixed rate (ms)", "latency_p99_ms", "{:.1f}", False)
    mem = ours.get("memory", {})
    t.add_row(
        "stack memory while running",
        f"RSS {mem.get('rss_gib', 0):.2f} GiB / PSS "
        f"{mem.get('pss_gib', 0):.2f} GiB ({mem.get('processes', 0)} processes)",
        "",
        "",
    )
    console.print(t)
    if ours.get("stages_ms"):
        st = Table(
            title=f"where the time goes at {args.rate:g}/s (per batch, Prometheus; mean batch "
            f"{ours.get('mean_batch_size')} events)"
        )
        st.add_column("stage")
        st.add_column("p50 ms", justify="right")
        st.add_column("p99 ms", justify="right")
        for name, q in ours["stages_ms"].items():
            st.add_row(name, f"{q['p50']:.2f}", f"{q['p99']:.2f}")
        console.print(st)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"raylane": ours, "baseline": base, "args": vars(args)}, indent=2))
    console.print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
