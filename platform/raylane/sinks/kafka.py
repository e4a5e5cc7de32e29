"""The Kafka sink: output records produced without awaiting each send, then all acks awaited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from raylane.errors import DependencyError
from raylane.kafka.client import KafkaConnection, connection
from raylane.kafka.records import OutRecord

__all__ = ["KafkaSink"]

log = logging.getLogger("raylane.sinks")


class KafkaSink:
    """Writes :class:`~raylane.kafka.records.OutRecord` s to their topics (acks=all)."""

    def __init__(
        self,
        kafka: str | KafkaConnection | None = None,
        *,
        client_id: str = "raylane-sink",
        producer: AIOKafkaProducer | None = None,
        **options: Any,
    ) -> None:
        self.kafka = connection(kafka) if producer is None else None
        self.client_id = client_id
        self._options = options
        self._producer = producer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        return self._producer

    async def start(self) -> None:
        if self._producer is None:
            assert self.kafka is not None
            self._producer = self.kafka.producer(client_id=self.client_id, **self._options)
        try:
            await self._producer.start()
        except Exception as e:
            await self.close()
            where = self.kafka.bootstrap if self.kafka else "the broker"
            raise DependencyError(
                f"cannot reach Kafka at {where}: {e}; is the broker up (`raylane dev status`)?",
                stage="publish",
            ) from e

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Send everything without awaiting each send, then await all acknowledgements."""
        if not records:
            return
        p = self.producer
        futures = [await p.send(o.topic, o.value, key=o.key, headers=o.headers) for o in records]
        try:
            await asyncio.gather(*futures)
        except Exception as e:
            raise DependencyError(f"publishing to Kafka failed: {e}", stage="publish") from e

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # closing is best effort; offsets were committed per batch
                log.exception("error closing the %s producer", self.client_id)
