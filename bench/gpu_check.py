"""GPU check: batch inference latency of the fraud model on CPU vs GPU, and a Serve
deployment of the pipeline with a GPU primary. One command, a few minutes:

    .venv/bin/python bench/gpu_check.py [--batches 100,1000,10000,100000] [--repeats 20]

1. Detects a GPU (nvidia-smi and an XGBoost built with CUDA). Without one it says so
   clearly and still measures the CPU figures.
2. Loads fraud@champion twice from MLflow (device cpu / cuda, as the Serve replica does
   for num_gpus > 0) and times one ``inplace_predict`` per batch at each size: p50 and
   p99 over --repeats calls, and the CPU/GPU ratio.
3. Deploys the pipeline on local Ray Serve with the primary's ``num_gpus: 1`` (CPU-only
   box: ``num_gpus: 0``), checks which device the replica reports, and times batch calls
   through the deployment handle (the ingress's path: Serve call + model).

It starts what it needs: the embedded stack (or the services the environment names) and,
when fraud@champion is not registered yet, `raylane bootstrap` (1-2 minutes on 2 cores).
Prints tables; writes bench/results/gpu-check-<time>.json. Figures are machine-specific.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_configs" / "fraud.yaml"
console = Console()


def detect_gpu() -> tuple[bool, str]:
    """(usable, what was found): nvidia-smi must list a GPU and XGBoost must have CUDA."""
    import xgboost as xgb

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no nvidia-smi on PATH"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"nvidia-smi failed: {e}"
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not gpus:
        return False, f"nvidia-smi lists no GPU ({out.stderr.strip()[:200]})"
    if not xgb.build_info().get("USE_CUDA"):
        return (
            False,
            f"GPU {gpus[0]} found, but this XGBoost {xgb.__version__} was built without CUDA",
        )
    return True, "; ".join(gpus)


def _columns(features: list[str], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f: rng.uniform(0, 1, n) for f in features}


def _time(fn: Any, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (GPU: kernels, transfers)
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def model_latency(uri: str, sizes: list[int], repeats: int, gpu: bool) -> list[dict[str, Any]]:
    from raylane.registry import load_model

    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    models = {d: load_model(uri, device=d) for d in devices}
    feats = models["cpu"].feature_names
    rows = []
    for n in sizes:
        cols = _columns(feats, n)
        row: dict[str, Any] = {"batch": n}
        for d, m in models.items():
            x = m.stack(cols)
            row[f"{d}_p50_ms"], row[f"{d}_p99_ms"] = _time(
                lambda m=m, x=x: m.predict_matrix(x), repeats
            )
        if gpu:
            row["cpu_over_gpu_p50"] = row["cpu_p50_ms"] / row["cuda_p50_ms"]
        rows.append(row)
    return rows


def serve_latency(sizes: list[int], repeats: int, gpu: bool) -> dict[str, Any]:
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, place_models

    # a GPU model runs in a deployment of its own (placement: ingress refuses num_gpus)
    args = place_models(isolated_args(CONFIG, f"gpu-check-{int(time.time())}"), "deployment")
    args["models"]["primary"]["ray_actor_options"] = {"num_cpus": 0.5, "num_gpus": 1 if gpu else 0}
    args["models"]["shadows"] = []
    args["outputs"].pop("shadow", None)
    args["promotion"]["shadow"] = None
    out: dict[str, Any] = {"rows": []}
    status = f"deploying the pipeline on local Ray Serve (primary num_gpus={1 if gpu else 0})..."
    with console.status(status), run_pipeline(CONFIG, overrides=args) as running:
        handle = running.model("champion")
        info = handle.info.remote().result(timeout_s=120)
        out["device"] = info["device"]
        out["version"] = info["version"]
        for n in sizes:
            cols = _columns(info["features"], n, seed=1)
            p50, p99 = _time(
                lambda cols=cols: handle.predict.remote(cols).result(timeout_s=120), repeats
            )
            out["rows"].append({"batch": n, "p50_ms": p50, "p99_ms": p99})
    return out


def ready() -> None:
    """Start (or reuse) the stack, and bootstrap the fraud pipeline if its models are missing."""
    from raylane.bootstrap import bootstrap, models_registered
    from raylane.localstack import up

    with console.status("starting the embedded stack (reused when it is running)..."):
        settings = up()
    if not models_registered(settings, "fraud"):
        console.print(
            "fraud@champion / fraud@challenger are not registered: running "
            "`raylane bootstrap` first"
        )
        bootstrap(ROOT / "serve_configs" / "fraud.yaml", console=console)


def main() -> int:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--batches", default="100,1000,10000,100000", help="Batch sizes, comma separated."
    )
    ap.add_argument("--repeats", type=int, default=20, help="Timed calls per batch size.")
    ap.add_argument("--uri", default="models:/fraud@champion", help="Model to time.")
    ap.add_argument("--no-serve", action="store_true", help="Skip the Serve deployment part.")
    ns = ap.parse_args()
    sizes = [int(s) for s in ns.batches.split(",") if s]

    ready()
    gpu, found = detect_gpu()
    if gpu:
        console.print(f"[bold green]GPU found[/]: {found}")
    else:
        console.print(
            f"[bold yellow]NO GPU FOUND[/] ({found}): measuring CPU only; the GPU columns "
            "are absent, the Serve primary is deployed with num_gpus: 0"
        )

    with console.status(f"timing {ns.uri} in process..."):
        rows = model_latency(ns.uri, sizes, ns.repeats, gpu)
    t = Table(
        title=f"batch inference latency, one inplace_predict ({ns.uri}, {ns.repeats} calls)",
        title_justify="left",
    )
    t.add_column("batch", justify="right")
    t.add_column("CPU p50 ms", justify="right")
    t.add_column("CPU p99 ms", justify="right")
    if gpu:
        for col in ("GPU p50 ms", "GPU p99 ms", "CPU/GPU p50"):
            t.add_column(col, justify="right")
    for r in rows:
        cells = [f"{r['batch']:,}", f"{r['cpu_p50_ms']:.2f}", f"{r['cpu_p99_ms']:.2f}"]
        if gpu:
            cells += [
                f"{r['cuda_p50_ms']:.2f}",
                f"{r['cuda_p99_ms']:.2f}",
                f"{r['cpu_over_gpu_p50']:.1f}x",
            ]
        t.add_row(*cells)
    console.print(t)

    result: dict[str, Any] = {"gpu": gpu, "found": found, "uri": ns.uri, "in_process": rows}
    if not ns.no_serve:
        served = serve_latency(sizes, ns.repeats, gpu)
        result["serve"] = served
        st = Table(
            title=f"through Ray Serve: primary on {served['device']} (v{served['version']}), "
            "handle.predict per batch",
            title_justify="left",
        )
        for col in ("batch", "p50 ms", "p99 ms"):
            st.add_column(col, justify="right")
        for r in served["rows"]:
            st.add_row(f"{r['batch']:,}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}")
        console.print(st)
        if gpu and served["device"] != "cuda":
            console.print("[bold red]the GPU primary did not report device cuda[/]")
            return 1
    if not gpu:
        console.print("[bold yellow]no GPU was found: only CPU figures above[/]")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"gpu-check-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
