"""Pipeline benchmark: raylane's batched path against the per-event baseline, same run.

    .venv/bin/python bench/pipeline.py [--events 30000] [--rate 1000] [--seconds 20]

1. Saturation: N events are produced as fast as possible into a fresh topic; the
   throughput is N over the span of the scored outputs' timestamps.
2. Latency at a fixed rate: events paced at --rate for --seconds; event→scored is
   the time a downstream consumer receives the scored record minus the moment the
   event was produced (its event_time).
   `--sweep 100,500,1000,2000` runs several rates one after the other (a fresh deployment
   and fresh topics for each), each with its p50/p99, its stages and the CPU every process
   used (in cores, by role);
   `--profile DIR` adds py-spy flame graphs of the ingress and primary-model replicas
   during each rate (DIR/<rate>-per-s/*.svg).
   `--placement deployment,ingress` and `--max-wait-ms 5,0` run steps 1 and 2 for each
   variant (every placement with every wait) one after the other in this run, with a table of
   the variants side by side.
3. Memory: RSS and PSS of every process of the stack (broker, Redis, MLflow, Ray
   with all its workers, this driver) while the app runs.
4. Passthrough: the same N events forwarded by a bare aiokafka consume→produce loop (its own
   process, bytes in, bytes out, commit per batch) over the same broker: the ceiling the broker
   and the client library set; raylane's saturation is shown as a fraction of it.
5. Baseline: one HTTP POST per event to a FastAPI service with the same model,
   one `get_online_features` call per event (bench/baseline_service.py), driven at
   saturation with 32 concurrent clients, and at the same fixed rate.

Prints a table and the ratios; writes bench/results/pipeline-<time>.json.
Needs the stack and bootstrap (it runs both if needed). Figures are machine-specific.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _procs import CpuSpan, FlameGraphs, replicas, stack_memory
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_configs" / "fraud.yaml"
console = Console()


def _csv(cast: Any) -> Any:
    """An argparse type: a comma-separated list, each item through `cast`."""
    return lambda v: [cast(x.strip()) for x in v.split(",")]


def _isolated(
    suffix: str, placement: str | None = None, max_wait_ms: int | None = None
) -> dict[str, Any]:
    """The fraud app's args on its own topics; `placement` (deployment or ingress) overrides
    where every model runs, `max_wait_ms` how long the ingress waits to fill a batch after
    its first record (None: as the config says)."""
    from raylane.testing.kafka import isolated_args, place_models

    args = place_models(isolated_args(CONFIG, suffix), placement)
    if max_wait_ms is not None:
        args["ingress"]["max_wait_ms"] = max_wait_ms
    return args


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
    bootstrap: str,
    topic: str,
    n: int,
    timeout_s: float,
    *,
    ready: asyncio.Event | None = None,
) -> tuple[list[int], list[float]]:
    """Output timestamps (ms) and receive-minus-event_time latencies of the first n records
    (`ready` is set once the consumer is assigned, before anything is read)."""
    from aiokafka import TopicPartition

    from raylane.contracts import Codec
    from raylane.kafka.client import connection

    codec = Codec.for_contract("payments.scored")
    c = connection(bootstrap).consumer(
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await c.start()
    await c.topics()  # metadata of every topic, this one included
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    if not parts:
        await c.stop()
        raise RuntimeError(f"topic {topic} has no partitions (was it created?)")
    c.assign(parts)
    if ready is not None:
        ready.set()
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


def bench_pipeline(
    args: argparse.Namespace,
    world: Any,
    bootstrap: str,
    placement: str | None = None,
    max_wait_ms: int | None = None,
) -> dict[str, Any]:
    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_topics as all_topics

    sat_args = _isolated("bench-sat-" + uuid.uuid4().hex[:6], placement, max_wait_ms)
    where = sat_args["models"]["primary"].get("placement", "deployment")
    wait = sat_args["ingress"].get("max_wait_ms")
    res: dict[str, Any] = {
        "placement": where,
        "max_wait_ms": wait,
        "variant": f"models: {where}, max_wait_ms {wait}",
    }
    uid = uuid.uuid4().hex[:6]
    lat_topic = f"payments.initiated.bench-lat-{uid}"
    ensure_topics(bootstrap, all_topics(sat_args), partitions=4)
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
        with console.status(f"saturation: {args.events:,} events (models: {res['placement']})"):

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
        res["memory"] = stack_memory()

    # fixed-rate latency: a fresh deployment and fresh topics for each rate, so one rate's
    # records never slow the next one's fetches (the embedded broker slows down as a
    # partition fills with record batches: bench/broker_fetch.py)
    rows = []
    for i, rate in enumerate(args.sweep or [args.rate]):
        lat_args = dict(sat_args, input={**sat_args["input"], "topic": f"{lat_topic}-{i}"})
        lat_args["ingress"] = {**sat_args["ingress"], "group_id": f"bench-lat-{uid}-{i}"}
        lat_args["outputs"] = {
            k: {**v, "topic": f"{v['topic']}-lat-{i}"} for k, v in sat_args["outputs"].items()
        }
        ensure_topics(bootstrap, all_topics(lat_args), partitions=4)
        with run_pipeline(CONFIG, overrides=lat_args) as running:
            running.wait_assigned()
            rows.append(_fixed_rate(args, world, bootstrap, lat_args, rate, seed=3 + i))
    res["sweep"] = rows
    first = rows[0]  # the --rate row (or the sweep's first): the README table's
    res["fixed_rate"] = first["rate"]
    res["latency_p50_ms"] = first["p50_ms"]
    res["latency_p99_ms"] = first["p99_ms"]
    res["latency_scored"] = first["scored"]
    res["stages_ms"] = first["stages_ms"]
    res["mean_batch_size"] = first["mean_batch_size"]
    return res


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


#: the replicas profiled with --profile: the ingress and the primary model
_PROFILED = ("ingress", "model-champion")


def _fixed_rate(
    args: argparse.Namespace,
    world: Any,
    bootstrap: str,
    lat_args: dict[str, Any],
    rate: float,
    seed: int,
) -> dict[str, Any]:
    """One fixed-rate run on the deployed app of `lat_args`: event→scored p50/p99, the stages
    (Prometheus, this run's batches only), and with --profile the CPU of every process and
    py-spy flame graphs of the ingress and primary-model replicas while events flow."""
    from raylane.dashboard.pages import STAGES
    from raylane.monitoring.live import histogram_quantile, scrape
    from raylane.settings import Settings

    home = Settings.load().home
    n = int(rate * args.seconds)
    events = [le.event for le in world.stream(rate=world.nominal_rate, seed=seed).take(n)]
    scored_topic = lat_args["outputs"]["scored"]["topic"]
    before = scrape(home)
    cpu = CpuSpan(prefix="fraud-")
    graphs: FlameGraphs | None = None
    if args.profile is not None:
        graphs = FlameGraphs(args.profile / f"{rate:g}-per-s")
        targets = {}
        for dep, pids in replicas("fraud-", _PROFILED).items():
            for j, pid in enumerate(pids):
                targets[f"{dep}-{j}" if len(pids) > 1 else dep] = pid
        # 80 % of the run: py-spy ends before the producer does
        graphs.start(targets, seconds=args.seconds * 0.8)
    where = lat_args["models"]["primary"].get("placement", "deployment")
    with console.status(f"latency: {n:,} events at {rate:g}/s (models: {where})"):

        async def lat() -> tuple[list[int], list[float]]:
            positioned = asyncio.Event()
            consumer = asyncio.create_task(
                _consume_scored(bootstrap, scored_topic, n, args.seconds + 120, ready=positioned)
            )
            await positioned.wait()
            cpu.start()
            await _produce(bootstrap, lat_args["input"]["topic"], events, rate)
            return await consumer

        _, lats = asyncio.run(lat())
    row: dict[str, Any] = {"rate": rate, "cpu_cores": cpu.stop()}
    if graphs is not None:
        row["flamegraphs"] = [_shown(Path(p)) for p in graphs.wait()]
    after = scrape(home)
    m = {k: v - before.get(k, 0.0) for k, v in after.items()}  # this run's samples
    row["stages_ms"] = {
        st[:-3]: {
            q: round(histogram_quantile(m, "raylane_stage_latency_ms", qq, f"stage={st}"), 2)
            for q, qq in (("p50", 0.5), ("p99", 0.99))
        }
        for st in STAGES  # the dashboard's stages, in data-path order
    }
    b, e = m.get("raylane_batches_total{}", 0.0), m.get("raylane_events_in_total{}", 0.0)
    row["mean_batch_size"] = round(e / b, 1) if b else None
    arr = np.array(lats[int(len(lats) * 0.1) :])  # drop the first 10 %: warm-up
    row["p50_ms"] = float(np.percentile(arr, 50)) if len(arr) else float("nan")
    row["p99_ms"] = float(np.percentile(arr, 99)) if len(arr) else float("nan")
    row["scored"] = len(lats)
    return row


async def _passthrough_loop(bootstrap: str, src: str, dst: str, n: int, timeout_s: float) -> int:
    """A bare consume→produce loop: read `src` in a consumer group, write every record's
    bytes (key and value, nothing decoded) to `dst`, commit after each batch is acked;
    return how many records it forwarded."""
    from raylane.kafka.client import connection

    conn = connection(bootstrap)
    c = conn.consumer(
        src,
        group_id=f"bench-passthrough-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    prod = conn.producer(client_id="bench-passthrough", linger_ms=1)
    await c.start()
    await prod.start()
    done = 0
    try:
        deadline = time.monotonic() + timeout_s
        while done < n and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=100, max_records=2000)
            if not got:
                continue
            records = [m for msgs in got.values() for m in msgs]
            acks = [await prod.send(dst, value=m.value, key=m.key) for m in records]
            await asyncio.gather(*acks)
            await c.commit()
            done += len(acks)
    finally:
        await prod.stop()
        await c.stop()
    return done


def _passthrough_worker(bootstrap: str, src: str, dst: str, n: int, timeout_s: float) -> None:
    asyncio.run(_passthrough_loop(bootstrap, src, dst, n, timeout_s))


def bench_passthrough(args: argparse.Namespace, world: Any, bootstrap: str) -> dict[str, Any]:
    """The ceiling the broker and aiokafka set on this machine: the same events, produced
    flat out as in the saturation run, forwarded by a bare consume→produce loop in its own
    process over the same broker; events/s over the span of the outputs' timestamps."""
    import multiprocessing

    from raylane.kafka.admin import delete_topics, ensure_topics
    from raylane.kafka.reader import read_range

    uid = uuid.uuid4().hex[:6]
    src, dst = f"bench.passthrough-in-{uid}", f"bench.passthrough-out-{uid}"
    ensure_topics(bootstrap, [src, dst], partitions=4)
    events = [le.event for le in world.stream(rate=world.nominal_rate, seed=2).take(args.events)]
    worker = multiprocessing.get_context("spawn").Process(
        target=_passthrough_worker, args=(bootstrap, src, dst, len(events), 300.0), daemon=True
    )
    worker.start()
    try:
        with console.status(f"passthrough: {len(events):,} events, consume→produce"):
            time.sleep(3)  # the worker's consumer joins its group before the first record
            asyncio.run(_produce(bootstrap, src, events, None))
            worker.join(timeout=330)  # it exits once every event is forwarded and acked
            stamps = sorted(m.timestamp for m in asyncio.run(read_range(bootstrap, dst)))
    finally:
        if worker.is_alive():
            worker.kill()
        delete_topics(bootstrap, [src, dst])
    res: dict[str, Any] = {"passthrough_forwarded": len(stamps)}
    if len(stamps) >= 2:
        res["passthrough_events_per_s"] = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)
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


def _variants_table(runs: list[dict[str, Any]]) -> None:
    """The same measures per variant (model placement, batch wait), run one after the other
    in this run; ratios against the first."""
    first = runs[0]
    t = Table(title=f"variants, same run (ratios against {first['variant']})")
    t.add_column("measure")
    for r in runs:
        t.add_column(r["variant"], justify="right")

    def ratio(a: float | None, b: float | None, higher_better: bool) -> str:
        if not a or not b:
            return ""
        return f" ({(b / a if higher_better else a / b):.2f}×)"

    sat = [r.get("saturation_events_per_s") for r in runs]
    t.add_row(
        "saturation events/s",
        *[f"{v or 0:,.0f}" + (ratio(sat[0], v, True) if i else "") for i, v in enumerate(sat)],
    )
    for j, row0 in enumerate(first["sweep"]):
        for q in ("p50_ms", "p99_ms"):
            vals = [r["sweep"][j][q] if j < len(r["sweep"]) else None for r in runs]
            t.add_row(
                f"{q[:3]} ms at {row0['rate']:,.0f}/s",
                *[
                    ("—" if v is None else f"{v:.1f}") + (ratio(vals[0], v, False) if i else "")
                    for i, v in enumerate(vals)
                ],
            )
        t.add_row(
            f"CPU cores at {row0['rate']:,.0f}/s",
            *[
                f"{r['sweep'][j]['cpu_cores']['total_cores']:.2f}" if j < len(r["sweep"]) else "—"
                for r in runs
            ],
        )
    t.add_row(
        "stack RSS GiB (processes)",
        *[f"{r['memory']['rss_gib']:.2f} ({r['memory']['processes']})" for r in runs],
    )
    console.print(t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=30_000, help="events for the saturation run")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed rate for the latency run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    p.add_argument("--baseline-events", type=int, default=3000)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--skip-passthrough",
        action="store_true",
        help="skip the bare consume→produce loop over the same broker (the ratio's ceiling)",
    )
    p.add_argument(
        "--sweep",
        type=_csv(float),
        default=None,
        metavar="RATES",
        help="fixed rates to run one after the other on the latency app (e.g. 100,500,1000,2000);"
        " the first is the table's fixed-rate row (default: --rate alone)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="during each fixed-rate run, py-spy flame graphs of the ingress and primary-model"
        " replicas into DIR/<rate>-per-s/ and every process's CPU in the JSON",
    )
    p.add_argument(
        "--placement",
        type=_csv(str),
        default=None,
        metavar="WHERE",
        help="where the models run: deployment (own Serve deployments), ingress (in the "
        "ingress replica), or both, comma-separated, one after the other in this run "
        "(saturation and sweep each; the first fills the main table); default: as the config",
    )
    p.add_argument(
        "--max-wait-ms",
        type=_csv(int),
        default=None,
        metavar="MS",
        help="the ingress's wait to fill a batch after its first record, e.g. 5,0: each value "
        "one after the other in this run (with each --placement); default: as the config",
    )
    args = p.parse_args()
    for where in args.placement or []:
        if where not in ("deployment", "ingress"):
            p.error(f"--placement {where!r}: use deployment, ingress or deployment,ingress")

    from raylane import localstack
    from raylane.bootstrap import bootstrap
    from raylane.testing import World

    settings = localstack.up()
    bootstrap(CONFIG, quiet=True)
    meta = json.loads((settings.home / "world-fraud.json").read_text())
    world = World(seed=meta["seed"], n_users=meta["users"])

    runs = [
        bench_pipeline(args, world, settings.kafka_bootstrap, where, wait)
        for where in args.placement or [None]
        for wait in args.max_wait_ms or [None]
    ]
    ours = runs[0]
    if not args.skip_passthrough:
        ours.update(bench_passthrough(args, world, settings.kafka_bootstrap))
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
    if ours.get("passthrough_events_per_s"):
        pt, sat = ours["passthrough_events_per_s"], ours.get("saturation_events_per_s") or 0.0
        t.add_row(
            "bare consume→produce passthrough, same broker (events/s)",
            f"{pt:,.0f}",
            "",
            f"raylane {sat / pt:.2f} of it",
        )
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
    if len(ours.get("sweep", [])) > 1 or args.profile is not None:
        sw = Table(title="fixed rates, one after the other (event produced → scored)")
        for col in ("events/s", "p50 ms", "p99 ms", "mean batch", "CPU (cores)", "top processes"):
            sw.add_column(col, justify="right" if col != "top processes" else "left")
        for r in ours["sweep"]:
            by = r["cpu_cores"]["by_role"]
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(by.items())[:5])
            sw.add_row(
                f"{r['rate']:,.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['mean_batch_size']}",
                f"{r['cpu_cores']['total_cores']:.2f}",
                top,
            )
        console.print(sw)
        for r in ours["sweep"]:
            for f in r.get("flamegraphs", []):
                console.print(f"flame graph at {r['rate']:g}/s: {f}")
    if len(runs) > 1:
        _variants_table(runs)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline-{time.strftime('%Y%m%dT%H%M%S')}.json"
    argv = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    doc = {"raylane": ours, "baseline": base, "args": argv}
    if len(runs) > 1:
        doc["variants"] = runs
    path.write_text(json.dumps(doc, indent=2))
    console.print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
