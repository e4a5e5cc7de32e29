"""Bootstrap hook of the fraud pipeline (called by `raylane bootstrap`).

1. Profiles of the simulated world → Feast parquet sources → `feast apply` → materialize to Redis.
2. Window state backfilled from recent history through the serving code path (Redis Lua),
   so a user's usual merchants are not "first seen" when live traffic starts.
3. Champion and challenger trained on simulated history and registered in MLflow
   (skipped when both aliases already exist, unless `retrain=True`).

The world's size sets the realistic live rate: each user pays about once every
100 s, so `users=20_000` matches 200 events/s of live traffic.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.settings import Settings
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRAIN_EVENTS = 150_000


def world_file(settings: Settings, cfg: PipelineConfig) -> Path:
    return settings.home / f"world-{cfg.name}.json"


def load_world(settings: Settings, cfg: PipelineConfig) -> Any:
    """The simulated world bootstrap prepared (same seed and size), for traffic drivers."""
    from raylane.testing import World

    p = world_file(settings, cfg)
    meta = json.loads(p.read_text()) if p.exists() else {"seed": 7, "users": 20_000}
    return World(seed=meta["seed"], n_users=meta["users"])


def _models_registered(settings: Settings, name: str) -> bool:
    from raylane.errors import ModelError
    from raylane.registry import resolve

    try:
        for alias in ("champion", "challenger"):
            resolve(f"models:/{name}@{alias}", tracking_uri=settings.mlflow_tracking_uri)
    except ModelError:
        return False
    return True


def prepare(cfg: PipelineConfig, settings: Settings, *, console: Console, quiet: bool = False,
            users: int = 20_000, seed: int = 7, retrain: bool = False) -> dict[str, Any]:
    from raylane.features import FeastRepo, apply, materialize, write_sources
    from raylane.testing import World

    report: dict[str, Any] = {}
    world = World(seed=seed, n_users=users)
    now = datetime.now(UTC).replace(microsecond=0)
    repo_path = Path(cfg.features.feast_repo)
    repo = FeastRepo.load(repo_path if repo_path.is_absolute() else ROOT / repo_path,
                          redis_url=settings.redis_url)

    t0 = time.perf_counter()
    with console.status(f"feast: writing profiles of {users:,} users and applying the repo"):
        as_of = now - timedelta(minutes=1)
        write_sources(world.user_profiles(as_of), world.merchant_profiles(as_of), repo)
        apply(repo)
    with console.status("feast: materializing profiles to Redis"):
        materialize(repo, end=now)
    report["feast_s"] = round(time.perf_counter() - t0, 1)
    console.print(f"[green]✓[/] feast: project {repo.project} materialized to {settings.redis_url} "
                  f"({report['feast_s']} s)")

    t0 = time.perf_counter()
    history = [e.event for e in world.history(now, hours=0.1)]
    with console.status(f"window state: backfilling {len(history):,} past events"):
        report["backfilled"] = asyncio.run(_backfill(cfg, settings, history))
    report["backfill_s"] = round(time.perf_counter() - t0, 1)
    console.print(f"[green]✓[/] window state: {report['backfilled']:,} events backfilled "
                  f"({report['backfill_s']} s)")

    name = cfg.models.primary.registered_name
    if retrain or not _models_registered(settings, name):
        sys.path.insert(0, str(HERE))
        try:
            import train as fraud_train  # models/fraud/train.py
        finally:
            sys.path.remove(str(HERE))
        hours = TRAIN_EVENTS / world.nominal_rate / 3600.0
        res = fraud_train.train(world=world, hours=hours, end=now - timedelta(hours=1),
                                tracking_uri=settings.mlflow_tracking_uri, progress=not quiet)
        for label, m in res.models.items():
            console.print(f"[green]✓[/] model {name}@{label}: held-out ROC AUC {m.auc:.4f} "
                          f"({len(m.feature_names)} features, {m.n_train:,} training rows)")
        report["auc"] = {label: round(m.auc, 4) for label, m in res.models.items()}
    else:
        console.print(f"[green]✓[/] models {name}@champion and {name}@challenger already registered "
                      "(pass --retrain to train again)")
    world_file(settings, cfg).parent.mkdir(parents=True, exist_ok=True)
    world_file(settings, cfg).write_text(json.dumps({"seed": seed, "users": users}))
    return report


async def _backfill(cfg: PipelineConfig, settings: Settings, events: list[dict[str, Any]]) -> int:
    import redis.asyncio as aioredis
    from raylane.features import RedisWindowStore

    client = aioredis.from_url(settings.redis_url)
    try:
        store = RedisWindowStore(client, cfg.name, cfg.features.windows)
        await store.clear()
        return await store.backfill(events)
    finally:
        await client.aclose()
