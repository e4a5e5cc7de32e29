"""`raylane bootstrap`: everything a pipeline needs before `serve run` works.

Generic steps come from the pipeline config (its topics, with partitions). The
use case's own preparation (data, feature repo, state backfill, training and
registration) lives beside its models, in ``models/<pipeline>/prepare.py``, as
a function ``prepare(cfg, settings, *, console, quiet, **options)``. So a new
use case needs a config, contracts and that file, never platform code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import ConfigError
from raylane.loading import import_file
from raylane.settings import Settings

__all__ = ["bootstrap", "pipeline_topics", "prepare_hook"]

PARTITIONS = 4


def pipeline_topics(cfg: PipelineConfig) -> list[str]:
    """Every topic the pipeline reads or writes."""
    from raylane.kafka.replay import ledger_topic

    # the replay ledger is created up front: brokers without topic auto-creation are common
    topics = {cfg.input.topic, cfg.input.dlq, ledger_topic(cfg.input.dlq), cfg.outputs.scored.topic}
    if cfg.outputs.shadow:
        topics.add(cfg.outputs.shadow.topic)
    topics |= {r.publish.topic for r in cfg.decision.rules if r.publish}
    if cfg.drift is not None and cfg.drift.enabled:
        topics.add(cfg.drift.output.topic)
    if cfg.actions is not None and cfg.actions.enabled:
        for t in cfg.actions.topics:
            topics |= {t.topic, t.dlq}
            topics |= {h.output.topic for h in t.handlers if h.type == "publish"}
    if cfg.labels is not None:
        topics.add(cfg.labels.topic)
    topics.add(cfg.promotion.audit_topic)
    return sorted(topics)


def prepare_hook(config_path: Path, cfg: PipelineConfig) -> Path:
    """``models/<pipeline>/prepare.py`` next to the config's ``serve_configs/`` folder."""
    root = config_path.resolve().parent.parent
    path = root / "models" / cfg.name / "prepare.py"
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; a pipeline named {cfg.name!r} needs "
            f"models/{cfg.name}/prepare.py "
            "defining prepare(cfg, settings, *, console, quiet, **options)"
        )
    return path


def bootstrap(
    config_path: str | Path, *, quiet: bool = False, console: Console | None = None, **options: Any
) -> dict[str, Any]:
    """Create the pipeline's topics, then run its use case's prepare hook."""
    from raylane.kafka.admin import ensure_topics

    console = console or Console(quiet=quiet)
    path = Path(config_path)
    _, cfg = load_serve_config(path)
    settings = Settings.load()
    t0 = time.perf_counter()
    topics = pipeline_topics(cfg)
    with console.status(f"creating {len(topics)} topics on {settings.kafka_bootstrap}"):
        ensure_topics(settings.kafka_bootstrap, topics, partitions=PARTITIONS)
    console.print(f"[green]✓[/] topics: {', '.join(topics)}")
    hook = prepare_hook(path, cfg)
    module = import_file(hook, f"_raylane_prepare_{cfg.name}")
    report: dict[str, Any] = module.prepare(cfg, settings, console=console, quiet=quiet, **options)
    report["topics"] = topics
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


# -- helpers for the use cases' prepare hooks ---------------------------------------------


def models_registered(
    settings: Settings, name: str, aliases: tuple[str, ...] = ("champion", "challenger")
) -> bool:
    """Whether registered model `name` has every alias in `aliases`."""
    from raylane.errors import ModelError
    from raylane.registry import resolve

    try:
        for alias in aliases:
            resolve(f"models:/{name}@{alias}", tracking_uri=settings.mlflow_tracking_uri)
    except ModelError:
        return False
    return True


def backfill_windows(
    cfg: PipelineConfig, settings: Settings, events: list[dict[str, Any]], console: Console
) -> dict[str, Any]:
    """Reset the pipeline's window state and replay `events` through the serving script."""
    import asyncio

    async def run() -> int:
        from raylane.features import RedisWindowStore
        from raylane.redis_clients import connect

        client = connect(settings.redis_url)
        try:
            store = RedisWindowStore.for_pipeline(client, cfg)
            await store.clear()
            return await store.backfill(events)
        finally:
            await client.aclose()

    t0 = time.perf_counter()
    with console.status(f"window state: backfilling {len(events):,} past events"):
        n = asyncio.run(run())
    seconds = round(time.perf_counter() - t0, 1)
    console.print(f"[green]✓[/] window state: {n:,} events backfilled ({seconds} s)")
    return {"backfilled": n, "backfill_s": seconds}


def train_and_register(
    hook_dir: Path,
    cfg: PipelineConfig,
    settings: Settings,
    console: Console,
    *,
    retrain: bool,
    **train_kw: Any,
) -> dict[str, Any]:
    """Run ``<hook_dir>/train.py``'s ``train(...)`` unless both aliases already exist."""

    name = cfg.models.primary.registered_name
    if not retrain and models_registered(settings, name):
        console.print(
            f"[green]✓[/] models {name}@champion and {name}@challenger already registered "
            "(pass --retrain to train again)"
        )
        return {}
    module = import_file(hook_dir / "train.py", f"_raylane_train_{cfg.name}")
    res = module.train(tracking_uri=settings.mlflow_tracking_uri, **train_kw)
    from raylane.lifecycle.promotion import sign_aliases

    # the operator who bootstraps holds the promotion key (if one is set): the aliases
    # training just set are approved, so replicas serve them
    signed = sign_aliases(name, list(res.models), tracking_uri=settings.mlflow_tracking_uri)
    if signed:
        console.print(f"[green]✓[/] approved {', '.join(f'{name}@{a}' for a in signed)}")
    for label, m in res.models.items():
        console.print(
            f"[green]✓[/] model {name}@{label}: held-out ROC AUC {m.auc:.4f} "
            f"({len(m.feature_names)} features, {m.n_train:,} training rows)"
        )
    return {"auc": {label: round(m.auc, 4) for label, m in res.models.items()}}
