"""The promotion audit trail: every promote and rollback as an event on the audit topic
(``models.promoted``, Avro in the Confluent wire format), read back by ``raylane history``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from raylane._sync import run_sync
from raylane.config import PipelineConfig
from raylane.kafka.client import KafkaConnection

__all__ = ["AUDIT_CONTRACT", "at_ms", "publish_audit", "read_audit_topic"]

AUDIT_CONTRACT = "models.promoted"


def publish_audit(
    cfg: PipelineConfig, event: dict[str, Any], bootstrap: str | KafkaConnection
) -> None:
    """Publish one models.promoted event (Avro, Confluent wire format), acknowledged."""
    from raylane.contracts import Codec, open_registry
    from raylane.kafka.admin import ensure_topics
    from raylane.kafka.producer import EventProducer

    codec = Codec.for_contract(AUDIT_CONTRACT, open_registry(cfg.schema_registry))
    topic = cfg.promotion.audit_topic
    ensure_topics(bootstrap, [topic], partitions=1)

    async def send() -> None:
        async with EventProducer(bootstrap, topic, codec, key_field="model_name") as prod:
            await prod.send_many([event])

    run_sync(send())


def read_audit_topic(
    cfg: PipelineConfig, bootstrap: str | KafkaConnection, idle_s: float = 1.0
) -> list[dict[str, Any]]:
    """Every models.promoted event of this pipeline on the audit topic, oldest first."""
    from raylane.contracts import Codec, open_registry
    from raylane.kafka.reader import read_topic

    codec = Codec.for_contract(AUDIT_CONTRACT, open_registry(cfg.schema_registry))

    async def read() -> list[dict[str, Any]]:
        records = await read_topic(bootstrap, cfg.promotion.audit_topic, idle_s, stage="audit")
        return [codec.decode(m.value) for m in records]

    events = [e for e in run_sync(read()) if e.get("pipeline") == cfg.name]
    return sorted(events, key=at_ms)


def at_ms(e: dict[str, Any]) -> int:
    at = e.get("at")
    if isinstance(at, datetime):
        return int(at.timestamp() * 1000)
    return int(at or 0)
