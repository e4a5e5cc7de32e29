"""The sink interface: where a pipeline's output records go.

A sink implements one method, ``async write(records)``, which returns once every record is
durably accepted (for Kafka: acknowledged by the broker) and raises a retriable
:class:`~raylane.errors.DependencyError` otherwise, so the caller commits its input offsets
only after a successful write. Records the target refuses for good (too large, a topic that
cannot be written) are named by :class:`~raylane.errors.PublishRejected`, raised only once
every other record of the write is accepted: the caller dead-letters their inputs instead
of retrying forever. Kafka outputs implement it (:mod:`raylane.sinks.kafka`); the
event archive and other non-Kafka outputs (webhooks, files) implement the same interface.
A new sink is one new file here plus one line in :data:`raylane.sinks.SINK_TYPES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from raylane.kafka.records import OutRecord

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Writes batches of output records; at-least-once, in order within a call."""

    async def start(self) -> None:
        """Open connections; raise a retriable DependencyError when the target is unreachable."""
        ...

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Write `records`; return only when all are durably accepted.

        Raises DependencyError (retriable: write them again) or PublishRejected (the records
        it names can never be written; all the others were accepted).
        """
        ...

    async def close(self) -> None:
        """Flush and release resources; best effort."""
        ...
