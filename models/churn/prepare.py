"""Bootstrap hook of the churn pipeline (called by `raylane bootstrap serve_configs/churn.yaml`).

1. Window state backfilled from the last half hour of simulated activity through the
   serving code path (Redis Lua), so live traffic starts with warm 30-minute windows.
2. Champion and challenger trained on simulated activity and registered in MLflow as
   ``churn`` (skipped when both aliases exist, unless ``retrain=True``).

No Feast step: the churn features are event fields and window aggregates only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.settings import Settings
from rich.console import Console

HERE = Path(__file__).resolve().parent


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
            users: int = 2000, seed: int = 7, retrain: bool = False) -> dict[str, Any]:
    from raylane.testing import World

    report: dict[str, Any] = {}
    world = World(seed=seed, n_users=users)
    now = datetime.now(UTC).replace(microsecond=0)

    if cfg.features.windows:
        t0 = time.perf_counter()
        history = [e.event for e in world.activity_history(now, hours=0.5)]
        with console.status(f"window state: backfilling {len(history):,} past events"):
            report["backfilled"] = asyncio.run(_backfill(cfg, settings, history))
        report["backfill_s"] = round(time.perf_counter() - t0, 1)
        console.print(f"[green]✓[/] window state: {report['backfilled']:,} events backfilled "
                      f"({report['backfill_s']} s)")

    name = cfg.models.primary.registered_name
    if retrain or not _models_registered(settings, name):
        sys.path.insert(0, str(HERE))
        try:
            import train as churn_train  # models/churn/train.py
        finally:
            sys.path.remove(str(HERE))
        res = churn_train.train(world=world, features=cfg.features, end=now - timedelta(hours=1),
                                tracking_uri=settings.mlflow_tracking_uri, progress=not quiet)
        for label, m in res.models.items():
            console.print(f"[green]✓[/] model {name}@{label}: held-out ROC AUC {m.auc:.4f} "
                          f"({len(m.feature_names)} features, {m.n_train:,} training rows)")
        report["auc"] = {label: round(m.auc, 4) for label, m in res.models.items()}
    else:
        console.print(f"[green]✓[/] models {name}@champion and {name}@challenger already "
                      "registered (pass --retrain to train again)")
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
