"""Wiring: the concrete parts of one pipeline's batch core, built from its config.

One place decides which codec, Redis client, Feast reader and breakers a pipeline uses,
so the Serve ingress (:func:`raylane.ingest.build_ingress`), integration tests and the
bench's baseline all run the same data path.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from raylane.config import PipelineConfig
from raylane.contracts import Codec, open_registry
from raylane.pipeline.breaker import GuardedModel, GuardedOnline, GuardedWindows, make_breaker
from raylane.pipeline.processor import (
    BatchProcessor,
    ModelClient,
    OnlineSource,
    WindowSource,
)
from raylane.redis_clients import connect
from raylane.settings import Settings

__all__ = ["build_processor", "codecs_for"]


def codecs_for(cfg: PipelineConfig) -> tuple[Codec, dict[str, Codec]]:
    """The input codec and one output codec per output contract of `cfg`."""
    registry = open_registry(cfg.schema_registry)
    inp = Codec.for_contract(
        cfg.input.contract,
        registry,
        formats=cfg.input.formats,
        max_event_bytes=cfg.input.max_event_bytes,
    )
    contracts = {cfg.outputs.scored.contract}
    if cfg.outputs.shadow:
        contracts.add(cfg.outputs.shadow.contract)
    contracts |= {r.publish.contract for r in cfg.decision.rules if r.publish}
    return inp, {c: Codec.for_contract(c, registry) for c in sorted(contracts)}


def build_processor(
    cfg: PipelineConfig,
    primary: ModelClient,
    *,
    settings: Settings | None = None,
    redis: aioredis.Redis | None = None,
    windows: WindowSource | None = None,
    online: OnlineSource | None = None,
) -> BatchProcessor:
    """A processor with Redis window features, Feast online reads and breakers around all."""
    settings = settings or Settings.load()
    inp, outs = codecs_for(cfg)
    if (cfg.features.windows and windows is None) or (cfg.features.online and online is None):
        redis = redis or connect(settings.redis_url)
    if cfg.features.windows and windows is None:
        from raylane.features import RedisWindowStore

        assert redis is not None
        windows = RedisWindowStore.for_pipeline(redis, cfg)
    if cfg.features.online and online is None:
        from raylane.features import FeastRepo, OnlineFeatureReader

        repo = FeastRepo.load(cfg.features.feast_repo, redis_url=settings.redis_url)
        online = OnlineFeatureReader.from_repo(repo, cfg.features.online, redis)
    b = cfg.breaker
    return BatchProcessor(
        cfg,
        input_codec=inp,
        output_codecs=outs,
        windows=GuardedWindows(windows, make_breaker(b, cfg.name, "windows")) if windows else None,
        online=GuardedOnline(online, make_breaker(b, cfg.name, "online")) if online else None,
        primary=GuardedModel(primary, make_breaker(b, cfg.name, f"model-{primary.name}")),
    )
