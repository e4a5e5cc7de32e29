"""Bootstrap hook of the fraud pipeline (called by `raylane bootstrap`).

1. Profiles of the simulated world → the Feast repo's parquet sources (by their FileSource
   names in features/definitions.py) → `feast apply` → materialize to Redis.
2. Window state backfilled from recent history through the serving code path (Redis Lua),
   so a user's usual merchants are not "first seen" when live traffic starts.
3. Champion and challenger trained on simulated history and registered in MLflow
   (skipped when both aliases already exist, unless `retrain=True`).

The world's size sets the realistic live rate: each user pays about once every
100 s, so `users=20_000` matches 200 events/s of live traffic.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from raylane.bootstrap import backfill_windows, train_and_register
from raylane.config import PipelineConfig
from raylane.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRAIN_EVENTS = 150_000


def prepare(
    cfg: PipelineConfig,
    settings: Settings,
    *,
    console: Console,
    quiet: bool = False,
    users: int = 20_000,
    seed: int = 7,
    retrain: bool = False,
) -> dict[str, Any]:
    from raylane.features import FeastRepo, apply, materialize, write_sources
    from raylane.testing import World

    report: dict[str, Any] = {}
    world = World(seed=seed, n_users=users)
    now = datetime.now(UTC).replace(microsecond=0)
    repo_path = Path(cfg.features.feast_repo)
    repo = FeastRepo.load(
        repo_path if repo_path.is_absolute() else ROOT / repo_path, redis_url=settings.redis_url
    )

    t0 = time.perf_counter()
    with console.status(f"feast: writing profiles of {users:,} users and applying the repo"):
        as_of = now - timedelta(minutes=1)
        sources = {
            "user_profiles": world.user_profiles(as_of),
            "merchant_profiles": world.merchant_profiles(as_of),
        }
        write_sources(sources, repo)
        apply(repo)
    with console.status("feast: materializing profiles to Redis"):
        materialize(repo, end=now)
    report["feast_s"] = round(time.perf_counter() - t0, 1)
    console.print(
        f"[green]✓[/] feast: project {repo.project} materialized to {settings.redis_url} "
        f"({report['feast_s']} s)"
    )

    report |= backfill_windows(
        cfg, settings, [e.event for e in world.history(now, hours=0.1)], console
    )
    report |= train_and_register(
        HERE,
        cfg,
        settings,
        console,
        retrain=retrain,
        world=world,
        hours=TRAIN_EVENTS / world.nominal_rate / 3600.0,
        end=now - timedelta(hours=1),
        progress=not quiet,
    )
    # traffic drivers (demo, bench, tests) rebuild the same world from this
    (settings.home / f"world-{cfg.name}.json").write_text(
        json.dumps({"seed": seed, "users": users})
    )
    return report
