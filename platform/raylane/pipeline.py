"""Wiring: the concrete parts of one pipeline, built from its config and the environment.

One place decides which codec, Redis client, Feast reader and breakers a
pipeline uses, so the Serve ingress, integration tests and the bench's
baseline all run the same data path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from raylane.config import PipelineConfig
from raylane.contracts import Codec, open_registry
from raylane.ingest.breaker import GuardedModel, GuardedOnline, GuardedWindows, make_breaker
from raylane.ingest.consumer import IngressLoop
from raylane.ingest.processor import (
    BatchProcessor,
    ModelClient,
    OnlineSource,
    Prediction,
    WindowSource,
)
from raylane.monitoring.metrics import serve_metrics
from raylane.settings import Settings

__all__ = ["LocalModelClient", "build_ingress", "build_processor", "codecs_for"]


class LocalModelClient:
    """A model from the registry scored in this process (notebooks, tests, no Ray)."""

    def __init__(self, name: str, uri: str, **load_kw: Any) -> None:
        from raylane.registry import load_model

        self.name = name
        self.model = load_model(uri, **load_kw)

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        scores = self.model.predict(columns)
        return Prediction(
            scores=np.asarray(scores),
            model_name=self.model.name,
            model_version=str(self.model.version),
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )


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
        redis = redis or aioredis.from_url(settings.redis_url)
    if cfg.features.windows and windows is None:
        from raylane.features import RedisWindowStore

        assert redis is not None
        windows = RedisWindowStore(redis, cfg.name, cfg.features.windows)
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


async def build_ingress(
    cfg: PipelineConfig,
    primary: ModelClient,
    shadows: Sequence[ModelClient] = (),
    *,
    settings: Settings | None = None,
    client_id: str | None = None,
    metrics_endpoint: bool = True,
) -> IngressLoop:
    """An ingress loop (not yet started) for `cfg`, scoring with `primary`."""
    settings = settings or Settings.load()
    processor = build_processor(cfg, primary, settings=settings)
    shadow_codec = (
        processor.output_codecs.get(cfg.outputs.shadow.contract) if cfg.outputs.shadow else None
    )
    if metrics_endpoint:
        serve_metrics(settings.home, f"{cfg.name}-ingress")
    return IngressLoop(
        cfg,
        bootstrap=settings.kafka_bootstrap,
        processor=processor,
        shadows=shadows,
        shadow_codec=shadow_codec,
        client_id=client_id or f"raylane-{cfg.name}",
    )
