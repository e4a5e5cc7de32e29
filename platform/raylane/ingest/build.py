"""Build an ingress loop for a pipeline config: batch core, shadow runner, Kafka, metrics."""

from __future__ import annotations

from collections.abc import Sequence

from raylane.config import PipelineConfig
from raylane.ingest.consumer import IngressLoop
from raylane.lifecycle.shadow_runner import ShadowRunner
from raylane.monitoring.metrics import serve_metrics
from raylane.pipeline.ports import ModelClient
from raylane.pipeline.wiring import build_processor
from raylane.settings import Settings

__all__ = ["build_ingress"]


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
        kafka=settings.kafka_bootstrap,
        processor=processor,
        shadows=ShadowRunner(cfg, shadows, codec=shadow_codec),
        client_id=client_id or f"raylane-{cfg.name}",
    )
