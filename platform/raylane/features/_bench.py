"""Micro-benchmark of the feature path against a live Redis (a script, never a timed test).

    REDIS_URL=redis://127.0.0.1:6379/0 python -m raylane.features._bench [--iters 200]

Prints µs per event of RedisWindowStore.update_and_read (fraud's three window specs),
OnlineFeatureReader.read (fraud's two views) and Feast's get_online_features on the same
batches, at batch sizes 1, 100 and 500, measured in the same run. Uses a throw-away Feast
project and window namespace and deletes their keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylane.config import load_serve_config
from raylane.features import (
    FeastRepo,
    OnlineFeatureReader,
    RedisWindowStore,
    apply,
    materialize,
    teardown,
    write_sources,
)
from raylane.features._redis import connect
from raylane.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SIZES = (1, 100, 500)
N_USERS, N_MERCHANTS = 10_000, 500


def _profiles() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ts = datetime.now(UTC) - timedelta(hours=1)
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(N_USERS)],
            "risk_score": rng.random(N_USERS),
            "avg_amount": rng.lognormal(3, 1, N_USERS),
            "txn_count_30d": rng.integers(0, 90, N_USERS),
            "account_age_days": rng.integers(0, 4000, N_USERS),
            "event_timestamp": ts,
            "created": ts,
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": [f"m{i}" for i in range(N_MERCHANTS)],
            "category_risk": rng.random(N_MERCHANTS),
            "fraud_rate_90d": rng.random(N_MERCHANTS) / 100,
            "event_timestamp": ts,
            "created": ts,
        }
    )
    return users, merchants


def _entities(size: int, rng: random.Random) -> dict[str, list[str]]:
    return {
        "user_id": [f"u{rng.randrange(N_USERS + 500)}" for _ in range(size)],
        "merchant_id": [f"m{rng.randrange(N_MERCHANTS + 20)}" for _ in range(size)],
    }


async def _median_us(fn: Any, batches: list[Any], size: int) -> float:
    """Median wall time of one batch, per event, in µs (robust to a busy machine)."""
    times = []
    for b in batches:
        t0 = time.perf_counter()
        await fn(b)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / size * 1e6


async def _bench(iters: int, redis_url: str) -> None:
    pipeline = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1]
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(ROOT / "features", tmp / "repo", ignore=shutil.ignore_patterns("data"))
    repo = FeastRepo.load(
        tmp / "repo",
        project=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        registry_path=tmp / "registry.db",
    )
    users, merchants = _profiles()
    write_sources({"user_profiles": users, "merchant_profiles": merchants}, repo)
    apply(repo)
    materialize(repo)
    store = repo.store()
    reader = OnlineFeatureReader.from_repo(repo, pipeline.features.online)
    client = connect(redis_url)
    windows = RedisWindowStore(client, f"bench-{uuid.uuid4().hex[:8]}", pipeline.features.windows)
    rng = random.Random(1)
    seq = 0
    t_ms = 1_700_000_000_000
    rows: list[tuple[int, float, float, float]] = []
    try:
        for _ in range(20):  # warm the entity-key cache, connections and the script cache
            await reader.read(_entities(500, rng))
        for size in SIZES:
            batches = [_entities(size, rng) for _ in range(iters)]
            events: list[list[dict[str, Any]]] = []
            for b in batches:
                evs = []
                for u, m in zip(b["user_id"], b["merchant_id"], strict=False):
                    seq += 1
                    t_ms += 7
                    evs.append(
                        {
                            "event_id": f"e{seq}",
                            "event_time": t_ms,
                            "user_id": u,
                            "merchant_id": m,
                            "amount": round(rng.uniform(1, 500), 2),
                        }
                    )
                events.append(evs)
            await windows.update_and_read(events[0])
            t_win = await _median_us(windows.update_and_read, events, size)
            t_read = await _median_us(reader.read, batches, size)
            feast_batches = batches[: max(5, iters // 10)]

            async def feast(b: dict[str, list[str]]) -> None:
                store.get_online_features(
                    features=reader.feature_refs,
                    entity_rows=reader.entity_rows(b),
                    full_feature_names=True,
                ).to_dict()

            t_feast = await _median_us(feast, feast_batches, size)
            rows.append((size, t_win, t_read, t_feast))
    finally:
        await windows.clear()
        await client.aclose()
        await reader.aclose()
        teardown(repo)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nRedis {redis_url}; µs per event, median over {iters} batches "
        f"(Feast: over {max(5, iters // 10)})"
    )
    print(
        f"{'batch':>6} {'window update_and_read':>23} {'online read':>12} "
        f"{'feast get_online_features':>26} {'feast/read':>10}"
    )
    for size, t_win, t_read, t_feast in rows:
        print(
            f"{size:>6} {t_win:>23.1f} {t_read:>12.1f} {t_feast:>26.1f} {t_feast / t_read:>10.1f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--iters", type=int, default=200, help="batches per size")
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL / raylane settings")
    args = p.parse_args()
    asyncio.run(_bench(args.iters, args.redis_url or Settings.load().redis_url))


if __name__ == "__main__":
    main()
