"""Drift monitor overhead: pipeline latency with and without the drift monitor, same run.

    .venv/bin/python bench/drift_overhead.py [--rate 300] [--seconds 30] [--rounds 1]

The fraud app (serve_configs/fraud.yaml, isolated topics, action runner off in both) is
deployed on local Ray twice per round: once with ``drift.enabled: false`` and once with
the drift monitor consuming the scored stream (windows of 500, Evidently per window).
Events are paced at --rate for --seconds with event_time = send time; event→scored is
the time a consumer receives the scored record minus event_time. Prints p50/p99 of both
and the difference, plus how many windows the monitor evaluated (the with-monitor run
starts measuring once the monitor has consumed the warm-up events); writes
bench/results/drift-overhead-<time>.json. Figures are machine-specific: on a small box
the monitor's Evidently runs compete with the ingress for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_configs" / "fraud.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import _consume_scored, _produce  # noqa: E402 - bench/ helpers, after sys.path

console = Console()


def _run_once(
    world: Any, bootstrap: str, *, drift: bool, rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    from ray import serve

    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, isolated_topics

    args = isolated_args(CONFIG, f"bench-drift-{uuid.uuid4().hex[:6]}")
    args["drift"] = {**args["drift"], "enabled": drift}
    args["actions"] = {**args["actions"], "enabled": False}
    ensure_topics(bootstrap, isolated_topics(args), partitions=4)
    out: dict[str, Any] = {"drift": drift}
    with run_pipeline(CONFIG, overrides=args) as running:
        running.wait_assigned()
        warm = [
            le.event for le in world.stream(rate=world.nominal_rate, seed=seed * 10 + 1).take(1000)
        ]
        asyncio.run(_produce(bootstrap, args["input"]["topic"], warm, None))
        asyncio.run(_consume_scored(bootstrap, args["outputs"]["scored"]["topic"], len(warm), 60))
        if drift:  # measure a running monitor, not its start-up (imports, reference download)
            h = serve.get_deployment_handle(f"{args['name']}-drift", app_name=running.app_name)
            deadline = time.monotonic() + 180
            while h.stats.remote().result(timeout_s=30).get("events", 0) < len(warm):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "the drift monitor did not consume the warm-up events in 180 s"
                    )
                time.sleep(0.5)
        n = int(rate * seconds)
        events = [
            le.event for le in world.stream(rate=world.nominal_rate, seed=seed * 10 + 2).take(n)
        ]

        async def drive() -> list[float]:
            consumer = asyncio.create_task(
                _consume_scored(
                    bootstrap, args["outputs"]["scored"]["topic"], len(warm) + n, seconds + 120
                )
            )
            await _produce(bootstrap, args["input"]["topic"], events, rate)
            return (await consumer)[1]

        with console.status(
            f"{'with' if drift else 'without'} drift monitor: {n:,} events at {rate:g}/s"
        ):
            lats = asyncio.run(drive())[len(warm) :]
        arr = np.array(lats[int(len(lats) * 0.1) :])  # drop the first 10 %: warm-up
        out.update(
            scored=len(lats),
            p50_ms=float(np.percentile(arr, 50)),
            p99_ms=float(np.percentile(arr, 99)),
        )
        if drift:
            out["monitor"] = h.stats.remote().result(timeout_s=30)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rate", type=float, default=300.0, help="events/s of the fixed-rate run")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    p.add_argument("--rounds", type=int, default=1, help="without/with pairs (alternating)")
    a = p.parse_args()

    from raylane import localstack
    from raylane.bootstrap import bootstrap
    from raylane.testing import World

    settings = localstack.up()
    bootstrap(CONFIG, quiet=True)
    meta = json.loads((settings.home / "world-fraud.json").read_text())
    world = World(seed=meta["seed"], n_users=meta["users"])
    runs = []
    for r in range(a.rounds):
        for drift in (False, True):
            runs.append(
                _run_once(
                    world,
                    settings.kafka_bootstrap,
                    drift=drift,
                    rate=a.rate,
                    seconds=a.seconds,
                    seed=r * 2 + int(drift),
                )
            )
    off = [x for x in runs if not x["drift"]]
    on = [x for x in runs if x["drift"]]
    p50_off, p99_off = np.mean([x["p50_ms"] for x in off]), np.mean([x["p99_ms"] for x in off])
    p50_on, p99_on = np.mean([x["p50_ms"] for x in on]), np.mean([x["p99_ms"] for x in on])
    t = Table(
        title=f"bench/drift_overhead.py — {a.rate:g} events/s for {a.seconds:g} s, "
        f"{a.rounds} round(s)"
    )
    for col in ("measure", "without drift monitor", "with drift monitor", "difference"):
        t.add_column(col, justify="right" if col != "measure" else "left")
    t.add_row(
        "event→scored p50 (ms)", f"{p50_off:.1f}", f"{p50_on:.1f}", f"{(p50_on / p50_off - 1):+.1%}"
    )
    t.add_row(
        "event→scored p99 (ms)", f"{p99_off:.1f}", f"{p99_on:.1f}", f"{(p99_on / p99_off - 1):+.1%}"
    )
    windows = sum(x.get("monitor", {}).get("windows", 0) for x in on)
    t.add_row("windows evaluated by the monitor", "-", str(windows), "")
    console.print(t)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"drift-overhead-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": runs, "args": vars(a)}, indent=2, default=str))
    console.print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
