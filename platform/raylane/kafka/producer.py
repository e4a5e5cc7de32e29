"""The platform's producer: contract-checked events onto Kafka.

Used by the demo, the bench, tests, notebooks and actions. Every event is
validated against its contract before anything is sent: a bad event raises a
:class:`~raylane.contracts.ContractViolation` whose message and ``path`` name
the field (``amount: expected double, got str '12'``), and in a batch nothing at
all goes out when one event is bad. Each event is keyed by its key field (the pipeline
config's ``input.key_field``: :meth:`EventProducer.for_pipeline`; an event without it is
refused, never sent with an empty key that would lose its ordering per entity) and
carries ``correlation_id`` and ``event_id`` headers (a correlation id is made
up, and marked ``raylane.correlation_id.generated: true``, when it has none).
``send_raw`` is the only way around the contract; tests use it to inject bad bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self

from raylane.config import PipelineConfig
from raylane.errors import ContractError, DependencyError, RaylaneError
from raylane.kafka.client import KafkaConnection, connection

GENERATED_HEADER = "raylane.correlation_id.generated"

__all__ = ["EventEncoder", "EventProducer"]


class EventEncoder(Protocol):
    def encode(self, record: Mapping[str, Any]) -> bytes: ...


class EventProducer:
    """Async producer of contract events for one topic."""

    def __init__(
        self,
        bootstrap: str | KafkaConnection,
        topic: str,
        codec: EventEncoder,
        *,
        key_field: str,
        linger_ms: int = 2,
        max_request_size: int = 1 << 20,
    ) -> None:
        self.topic = topic
        self.codec = codec
        self.key_field = key_field
        conn = connection(bootstrap)
        self._producer = conn.producer(
            linger_ms=linger_ms, max_batch_size=512 << 10, max_request_size=max_request_size
        )
        self.bootstrap = conn.bootstrap

    @classmethod
    def for_pipeline(
        cls, cfg: PipelineConfig, bootstrap: str | KafkaConnection, codec: EventEncoder, **kw: Any
    ) -> EventProducer:
        """A producer onto `cfg`'s input topic, keyed by its ``input.key_field``."""
        return cls(bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field, **kw)

    async def __aenter__(self) -> Self:
        try:
            await self._producer.start()
        except Exception as e:
            await self._producer.stop()
            if isinstance(e, RaylaneError):  # a refused login says so itself
                raise
            raise DependencyError(
                f"cannot reach Kafka at {self.bootstrap}: {e}", stage="publish"
            ) from e
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    def encode(self, event: Mapping[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) for `event`; raises ContractError before anything is sent."""
        value = self.codec.encode(event)
        key = event.get(self.key_field)
        if key is None:
            raise ContractError(
                f"event {event.get('event_id')!r} has no {self.key_field!r}, the key field of "
                f"topic {self.topic}; set it, or key the producer by another field "
                "(key_field=..., the pipeline's input.key_field)",
                stage="validate",
            )
        cid = event.get("correlation_id")
        headers = [
            ("correlation_id", str(cid or uuid.uuid4()).encode()),
            ("event_id", str(event.get("event_id", "")).encode()),
        ]
        if not cid:
            headers.append((GENERATED_HEADER, b"true"))
        return str(key).encode(), value, headers

    async def send(self, event: Mapping[str, Any], *, wait: bool = True) -> asyncio.Future[Any]:
        """Validate and send one event; raises ContractError (nothing sent) if it is bad."""
        key, value, headers = self.encode(event)
        fut: asyncio.Future[Any] = await self._producer.send(
            self.topic, value, key=key, headers=headers
        )
        if wait:
            await fut
        return fut

    async def send_raw(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> asyncio.Future[Any]:
        """Send bytes as they are (tests use this to inject malformed events)."""
        fut: asyncio.Future[Any] = await self._producer.send(
            self.topic, value, key=key, headers=list(headers)
        )
        return fut

    async def send_many(
        self, events: Sequence[Mapping[str, Any]], *, wait: bool = True
    ) -> list[asyncio.Future[Any]]:
        """Validate all, then send all without awaiting each; optionally await the acks."""
        encoded = [self.encode(e) for e in events]
        futs = [await self._producer.send(self.topic, v, key=k, headers=h) for k, v, h in encoded]
        if wait and futs:
            await asyncio.gather(*futs)
        return futs

    async def flush(self) -> None:
        await self._producer.flush()
