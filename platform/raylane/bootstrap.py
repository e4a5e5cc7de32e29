"""`raylane bootstrap`: everything a pipeline needs before `serve run` works.

Generic steps come from the pipeline config (its topics, with partitions). The
use case's own preparation (data, feature repo, state backfill, training and
registration) lives beside its models, in ``models/<pipeline>/prepare.py``, as
a function ``prepare(cfg, settings, *, console, quiet, **options)``. So a new
use case needs a config, contracts and that file, never platform code.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import ConfigError
from raylane.settings import Settings

__all__ = ["bootstrap", "pipeline_topics", "prepare_hook"]

PARTITIONS = 4


def pipeline_topics(cfg: PipelineConfig) -> list[str]:
    """Every topic the pipeline reads or writes."""
    topics = {cfg.input.topic, cfg.input.dlq, cfg.outputs.scored.topic}
    if cfg.outputs.shadow:
        topics.add(cfg.outputs.shadow.topic)
    topics |= {r.publish.topic for r in cfg.decision.rules if r.publish}
    return sorted(topics)


def prepare_hook(config_path: Path, cfg: PipelineConfig) -> Path:
    """``models/<pipeline>/prepare.py`` next to the config's ``serve_configs/`` folder."""
    root = config_path.resolve().parent.parent
    path = root / "models" / cfg.name / "prepare.py"
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; a pipeline named {cfg.name!r} needs models/{cfg.name}/prepare.py "
            "defining prepare(cfg, settings, *, console, quiet, **options)"
        )
    return path


def bootstrap(config_path: str | Path, *, quiet: bool = False, console: Console | None = None,
              **options: Any) -> dict[str, Any]:
    """Create the pipeline's topics, then run its use case's prepare hook."""
    from raylane.localstack import ensure_topics

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
    spec = importlib.util.spec_from_file_location(f"_raylane_prepare_{cfg.name}", hook)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report: dict[str, Any] = module.prepare(cfg, settings, console=console, quiet=quiet, **options)
    report["topics"] = topics
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
