"""Backtest throughput: Ray Data's map_batches against the same scoring in one pandas process.

    .venv/bin/python bench/backtest.py [--events 200000] [--files 40] [--concurrency 1,2]

Writes a synthetic archive of the scored stream (``--events`` records in ``--files`` Parquet
files through the archive's own writer; feature maps resampled from the champion's
reference sample, so the values are realistic), then scores it with fraud@champion and
fraud@challenger three ways in the same run:

* **pandas**: ``read_archive`` + ``score_frame`` in this process (one model call per model);
Each run's time includes loading the models (the actors load them too); starting Ray does
not.

* **Ray Data** with 1 and 2 actors (``raylane.serving.batch.score_files``: read_parquet,
  map_batches, to_pandas), what ``Pipeline.backtest`` runs.

Checks the three give the same scores, prints events/s and the ratios to pandas, and writes
bench/results/backtest-<time>.json. Needs the embedded stack and bootstrap (run
``raylane dev up`` and ``raylane bootstrap`` first, or ``make demo`` once).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from raylane.kafka.records import InRecord
from raylane.lifecycle.backtest import score_frame
from raylane.registry import load_model, load_reference, resolve
from raylane.serving.batch import connect_ray, score_files
from raylane.settings import Settings
from raylane.sinks.archive import ArchiveSink
from raylane.sinks.archive_read import archive_files, read_archive

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def write_archive(root: str, n: int, files: int, seed: int = 0) -> None:
    """`n` scored-like records, JSON values with a feature map, in `files` flushes."""
    ref = load_reference("models:/fraud@champion")
    cols = [c for c in ref.columns if c not in ("score", "label")]
    rng = np.random.default_rng(seed)
    rows = ref[cols].to_numpy()[rng.integers(0, len(ref), n)]
    sink = ArchiveSink(root)
    t0 = 1_796_500_000_000
    per = -(-n // files)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing the synthetic archive", total=n)
        for f in range(files):
            recs = []
            for i in range(f * per, min(n, (f + 1) * per)):
                value = {
                    "event_id": f"e{i}",
                    "score": 0.0,
                    "features": dict(zip(cols, map(float, rows[i]), strict=True)),
                }
                recs.append(
                    InRecord("bench.scored", 0, i, None, json.dumps(value).encode(), [], t0 + i)
                )
            sink.write_sync(recs)
            bar.advance(task, len(recs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--concurrency", default="1,2")
    a = ap.parse_args()
    tu = Settings.load().mlflow_tracking_uri
    uris = {
        "champion": resolve("models:/fraud@champion", tracking_uri=tu).uri_pinned,
        "challenger": resolve("models:/fraud@challenger", tracking_uri=tu).uri_pinned,
    }
    out: dict[str, Any] = {"events": a.events, "files": a.files, "uris": uris, "runs": {}}
    with tempfile.TemporaryDirectory() as root:
        write_archive(root, a.events, a.files)
        t = time.perf_counter()
        models = {k: load_model(u, tracking_uri=tu) for k, u in uris.items()}
        frame = read_archive(root, "bench.scored")
        base = score_frame(frame, models).set_index("event_id")
        pandas_s = time.perf_counter() - t
        out["runs"]["pandas"] = {"seconds": pandas_s, "events_per_s": a.events / pandas_s}
        files = archive_files(root, "bench.scored")
        connect_ray()  # Ray's start-up is not the backtest's cost
        for c in [int(x) for x in a.concurrency.split(",") if x]:
            t = time.perf_counter()
            got = score_files(files, uris, tracking_uri=tu, concurrency=c).set_index("event_id")
            s = time.perf_counter() - t
            for k in uris:  # the same scores, whatever ran them
                np.testing.assert_allclose(
                    got.loc[base.index, f"score_{k}"], base[f"score_{k}"], rtol=1e-6
                )
            out["runs"][f"ray_data_{c}"] = {"seconds": s, "events_per_s": a.events / s}
    table = Table(title=f"backtest of {a.events:,} archived events, 2 models ({a.files} files)")
    for col in ("run", "seconds", "events/s", "vs pandas"):
        table.add_column(col, justify="right")
    p = out["runs"]["pandas"]["events_per_s"]
    for name, r in out["runs"].items():
        table.add_row(
            name,
            f"{r['seconds']:.2f}",
            f"{r['events_per_s']:,.0f}",
            f"{r['events_per_s'] / p:.2f}×",
        )
    console.print(table)
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    path = res / f"backtest-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
