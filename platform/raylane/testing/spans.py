"""Spans captured in memory, for tests of :mod:`raylane.monitoring.tracing`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raylane.monitoring import tracing

__all__ = ["captured_spans"]


@contextlib.contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the block, every finished span kept by the exporter it yields."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()
