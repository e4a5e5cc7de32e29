"""Fault suite: the fraud pipeline under faults, with the count of what was lost.

    .venv/bin/python bench/faults.py [--only kill_ingress,redis_down ...] [--scale 1.0]

Deploys serve_configs/fraud.yaml on local Ray (2 ingress replicas, Redis behind a fault
proxy, a webhook action), afresh on topics of its own for each scenario (deleted after it),
and runs each scenario of raylane.testing.scenarios while valid payments flow:

1. SIGKILL an ingress replica 10 times during 100,000 events;
2. Redis stopped for 60 s, then 3. Redis accepting connections but answering nothing for 60 s;
4. the primary model's replica SIGKILLed 3 times under load;
5. 3x the pipeline's sustainable rate (measured first, in the same run) for 60 s, then back;
6. a promotion mid-stream (every event scored by exactly one version);
7. a 1 % poison mix (NaN/Inf in JSON and Avro, huge ids and keys, far-future and far-past
   event times, a compressed value over the size limit, non-UTF-8 strings, an unknown
   schema id, empty values);
8. the action runner SIGKILLed while webhook deliveries are in flight.

Prints one table (the columns are defined in raylane.testing.faults.FaultRow) and writes
bench/results/faults-<time>.json. --scale shrinks every scenario (0.1 for a quick look).
Needs the stack and bootstrap (it runs both if needed). The e2e tests
(tests/e2e/test_faults.py) run the same functions, shorter, and assert lost = 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_configs" / "fraud.yaml"
console = Console()


def _plan(scale: float, sustainable: float | None) -> dict[str, dict[str, Any]]:
    def n(x: float) -> int:
        return max(200, int(x * scale))

    def s(x: float) -> float:
        return max(3.0, x * scale)

    plan: dict[str, dict[str, Any]] = {
        "kill_ingress": {"events": n(100_000), "rate": 1000, "kills": max(2, round(10 * scale))},
        "redis_down": {"events": n(300 * 120), "rate": 300, "outage_s": s(60)},
        "redis_silent": {"events": n(300 * 120), "rate": 300, "outage_s": s(60)},
        "kill_model": {"events": n(30_000), "rate": 500, "kills": 3},
        "promotion": {"events": n(20_000), "rate": 300},
        "poison_mix": {"events": n(50_000), "rate": 1000, "share": 0.01},
        "action_crash": {"events": n(10_000), "rate": 300},
    }
    if sustainable is not None:
        plan["overload"] = {
            "rate": round(sustainable / 3),
            "burst_rate": round(3 * sustainable),
            "burst_s": s(60),
            "calm_s": s(30),
        }
    return plan


ORDER = [
    "kill_ingress",
    "redis_down",
    "redis_silent",
    "kill_model",
    "overload",
    "poison_mix",
    "action_crash",
    "promotion",  # last: it moves the rig's champion alias
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every scenario (0 < s <= 1)")
    ap.add_argument("--saturation-events", type=int, default=30_000)
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x] or ORDER
    unknown = set(only) - set(ORDER)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(ORDER)}")

    from raylane import localstack
    from raylane.bootstrap import bootstrap
    from raylane.testing.faults import FaultRig
    from raylane.testing.scenarios import SCENARIOS, saturation

    localstack.up()
    bootstrap(CONFIG, quiet=True)
    rows = []
    meta: dict[str, Any] = {"scale": a.scale, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for name in [x for x in ORDER if x in only]:
        # a fresh deployment on fresh topics per scenario (deleted after it): the embedded
        # broker keeps every record in memory and stops serving fetches once a partition
        # holds ~10,000+ record batches (bench/broker_fetch.py), so one scenario's backlog
        # must not be the next one's starting point
        with (
            console.status(f"deploying the fraud pipeline with fault injection for {name}"),
            FaultRig.deploy(CONFIG) as rig,
        ):
            sustainable = None
            if name == "overload":
                console.print("measuring the sustainable rate first ...")
                sustainable = saturation(rig, events=max(2000, int(a.saturation_events * a.scale)))
                meta["sustainable_events_per_s"] = sustainable
                console.print(f"sustainable: {sustainable:,.0f} events/s")
            params = _plan(a.scale, sustainable)[name]
            console.print(f"[bold]{name}[/] {params}")
            t0 = time.perf_counter()
            row = SCENARIOS[name](rig, **params)
            console.print(
                f"  {'ok' if row.ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s: {row}"
            )
            rows.append((name, params, row))

    table = Table(title="fault suite (serve_configs/fraud.yaml, this machine)")
    for col in (
        "scenario",
        "produced",
        "scored distinct",
        "lost",
        "duplicates",
        "conflicting",
        "DLQ",
        "recover s",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for _, _, r in rows:
        table.add_row(
            r.scenario,
            f"{r.produced:,}",
            f"{r.scored:,}",
            str(r.lost),
            f"{r.duplicates:,}",
            str(r.conflicting),
            f"{r.dlq}/{r.expected_dlq}",
            "-" if r.recover_s is None else f"{r.recover_s:.1f}",
        )
    console.print(table)
    for _, _, r in rows:
        console.print(f"- {r.scenario}: {r.detail}")
    out = ROOT / "bench" / "results" / f"faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                **meta,
                "rows": [{"name": n, "params": p, **dataclasses.asdict(r)} for n, p, r in rows],
            },
            indent=2,
        )
    )
    console.print(f"wrote {out.relative_to(ROOT)}")
    if not all(r.ok for _, _, r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
