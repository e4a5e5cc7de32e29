"""Bootstrap hook of the churn pipeline (called by `raylane bootstrap serve_configs/churn.yaml`).

1. Window state backfilled from the last half hour of simulated activity through the
   serving code path (Redis Lua), so live traffic starts with warm 30-minute windows.
2. Champion and challenger trained on simulated activity and registered in MLflow as
   ``churn`` (skipped when both aliases exist, unless ``retrain=True``).

No Feast step: the churn features are event fields and window aggregates only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from raylane.bootstrap import backfill_windows, train_and_register
from raylane.config import PipelineConfig
from raylane.settings import Settings

HERE = Path(__file__).resolve().parent


def prepare(
    cfg: PipelineConfig,
    settings: Settings,
    *,
    console: Console,
    quiet: bool = False,
    users: int = 2000,
    seed: int = 7,
    retrain: bool = False,
) -> dict[str, Any]:
    from raylane.testing import World

    report: dict[str, Any] = {}
    world = World(seed=seed, n_users=users)
    now = datetime.now(UTC).replace(microsecond=0)

    if cfg.features.windows:
        history = [e.event for e in world.activity_history(now, hours=0.5)]
        report |= backfill_windows(cfg, settings, history, console)
    report |= train_and_register(
        HERE,
        cfg,
        settings,
        console,
        retrain=retrain,
        world=world,
        features=cfg.features,
        end=now - timedelta(hours=1),
        progress=not quiet,
    )
    return report
