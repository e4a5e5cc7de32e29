"""The ports of the batch core: what the processor needs from the outside world.

Each is a small protocol, so the same :class:`~raylane.pipeline.processor.BatchProcessor`
runs with Redis and Ray Serve in production and with in-memory fakes
(:mod:`raylane.testing.fakes`) in unit tests. A new feature source implements
:class:`WindowSource` or :class:`OnlineSource`; a new way to call a model implements
:class:`ModelClient`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from raylane.errors import ContractError

__all__ = [
    "BatchCodec",
    "ModelClient",
    "OnlineSource",
    "OutputCodec",
    "Prediction",
    "ShadowJob",
    "WindowSource",
]


class WindowSource(Protocol):
    """Streaming window features: record a batch's events and read their windows in one go."""

    async def update_and_read(
        self, events: Sequence[Mapping[str, Any]]
    ) -> dict[str, np.ndarray]: ...


class OnlineSource(Protocol):
    """Online features keyed by entity: one read per batch."""

    async def read(self, entities: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Prediction:
    """A model's scores for one batch, with the version that produced them."""

    scores: np.ndarray
    model_name: str
    model_version: str
    latency_ms: float


class ModelClient(Protocol):
    """Scores a columnar batch (one call per batch)."""

    name: str

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction: ...


class BatchCodec(Protocol):
    """Decodes a batch of raw values into (index, event) pairs and (index, error) pairs."""

    def decode_batch(
        self, raws: Sequence[bytes]
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, ContractError]]]: ...


class OutputCodec(Protocol):
    """Encodes records of one output contract."""

    @property
    def field_names(self) -> Sequence[str]: ...

    def encode_many(self, records: Sequence[Mapping[str, Any]]) -> list[bytes]: ...


@dataclass
class ShadowJob:
    """What a shadow comparison needs, captured when the primary has scored."""

    columns: dict[str, np.ndarray]
    events: list[dict[str, Any]]
    primary: Prediction
    primary_decisions: list[str]
    #: the batch span's context (tracing on): the shadow call's span links to it
    trace_link: Any = None
