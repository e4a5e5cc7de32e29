"""Plain records crossing the ingest boundary: what came from Kafka, what goes back.

Kept free of aiokafka types so the batch logic is testable with in-memory lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylane.errors import RaylaneError

__all__ = ["Headers", "InRecord", "OutRecord", "SkippedBatch", "header"]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class SkippedBatch:
    """A record batch the consumer could not read and went past: offsets
    ``first_offset`` up to (not including) ``next_offset`` of one partition."""

    first_offset: int
    next_offset: int
    codec: str
    error: RaylaneError
    #: the batch as the broker sent it (compressed), b"" when its bounds were not found
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int = 0
    #: set on the stand-in for a batch that could not be read: it goes to the DLQ, and its
    #: offset is the batch's last, so committing it commits past the batch
    skipped: SkippedBatch | None = None

    @property
    def where(self) -> str:
        """`topic[partition]@offset`, the form every log line about a record uses."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


def header(headers: Headers, name: str) -> bytes | None:
    """The last value of header `name`, or None."""
    found = None
    for k, v in headers:
        if k == name:
            found = v
    return found
