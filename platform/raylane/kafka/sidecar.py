"""Kafka clients of the loops beside the data path (drift monitor, action runner).

Each such loop consumes one or more output topics in its own consumer group, commits by
hand after its work is acknowledged, and produces a few records of its own. This module
opens that consumer/producer pair with the same settings everywhere and closes it best-effort.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from raylane.errors import DependencyError, RaylaneError
from raylane.kafka.client import KafkaConnection, connection

__all__ = ["close_clients", "open_clients"]

log = logging.getLogger("raylane.ingest")


async def open_clients(
    who: str,
    stage: str,
    bootstrap: str | KafkaConnection,
    topics: Sequence[str],
    *,
    group_id: str,
    client_id: str,
    auto_offset_reset: str = "earliest",
    fetch_max_wait_ms: int = 10,
    max_poll_records: int = 500,
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """Start a manual-commit consumer of `topics` and an acks=all producer, or raise.

    Idempotence follows the connection (off for the embedded broker, which grants no
    producer ids); the loops de-duplicate by event_id either way. On failure both clients are
    closed and a
    retriable `DependencyError` names `who` and the broker.
    """
    conn = connection(bootstrap)
    producer = conn.producer(client_id=f"{client_id}-producer")
    consumer = conn.consumer(
        *topics,
        group_id=group_id,
        client_id=client_id,
        auto_offset_reset=auto_offset_reset,
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_poll_records=max_poll_records,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=3_000,
        max_poll_interval_ms=600_000,
    )
    try:
        await producer.start()
        await consumer.start()
    except Exception as e:
        await close_clients(who, consumer, producer)
        if isinstance(e, RaylaneError):  # a refused login says so itself
            raise
        raise DependencyError(
            f"{who} cannot reach Kafka at {conn.bootstrap}: {e}", stage=stage
        ) from e
    return consumer, producer


async def close_clients(who: str, *clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stop each client; errors are logged, not raised (offsets are committed per batch)."""
    for c in clients:
        if c is not None:
            try:
                await c.stop()
            except Exception:
                log.exception("error closing a Kafka client of the %s", who)
