"""Tracing: when the OTEL_* variables turn it on, what off costs (nothing is created), and the
spans and headers of a batch (in-memory exporter, no broker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raylane.errors import ConfigError
from raylane.kafka.records import InRecord, OutRecord
from raylane.monitoring import tracing
from raylane.testing.spans import captured_spans

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with captured_spans() as exporter:
        yield exporter


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "otlp"),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_the_standard_variables_turn_tracing_on(env: dict[str, str], want: str | None) -> None:
    assert tracing.from_env(env) == want


def test_an_unknown_exporter_fails_at_start_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER='zipkin'.*use otlp"):
        tracing.configure("ingress")
    assert not tracing.enabled()


def test_off_creates_nothing() -> None:
    assert not tracing.enabled()
    rec = InRecord("t", 0, 1, None, b"x", [("traceparent", PARENT.encode())])
    assert tracing.start_batch([rec], "p") is tracing.NO_TRACE
    headers = [("a", b"1")]
    assert tracing.headers_with_context(headers) is headers
    assert tracing.http_headers_with_context({"a": "1"}) == {"a": "1"}
    with tracing.span("x"), tracing.record_span(rec, "y"), tracing.linked_span("z", None):
        pass
    # a producer's context is still readable (log lines name it)
    assert tracing.trace_id_of(rec.headers) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of([("traceparent", b"garbage")]) is None


def test_a_batch_traces_each_event_in_its_producers_trace(spans: InMemorySpanExporter) -> None:
    with_parent = InRecord("in", 0, 1, None, b"x", [("traceparent", PARENT.encode())])
    without = InRecord("in", 1, 7, None, b"y", [])
    trace = tracing.start_batch([with_parent, without], "fraud")
    assert isinstance(trace, tracing.BatchTrace)
    with trace.stage("decode"):
        pass
    shared: list[tuple[str, bytes]] = [("event_id", b"e1")]
    outs = [OutRecord("scored", None, b"1", shared), OutRecord("flagged", None, b"1", shared)]
    other = OutRecord("scored", None, b"2", [("traceparent", PARENT.encode())])
    trace.stamp([*outs, other], [with_parent, with_parent, without])
    trace.end()

    assert [k for k, _ in shared].count("traceparent") == 1  # one header list, stamped once
    assert tracing.trace_id_of(shared) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [k for k, _ in other.headers].count("traceparent") == 1  # replaced, not added

    done = {s.name: s for s in spans.get_finished_spans()}
    batch = done["raylane.batch"]
    ev = next(
        s
        for s in spans.get_finished_spans()
        if s.name == "in process" and s.parent is not None and s.parent.is_remote
    )
    assert ev.parent is not None and format(ev.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert batch.context is not None
    assert [link.context.span_id for link in ev.links] == [batch.context.span_id]
    assert done["decode"].parent is not None
    assert done["decode"].parent.span_id == batch.context.span_id
    # the untraced event has no span of its own; its output carries the batch's context
    assert len([s for s in spans.get_finished_spans() if s.name == "in process"]) == 1
    assert tracing.trace_id_of(other.headers) == format(batch.context.trace_id, "032x")


def test_a_failed_batch_marks_its_span(spans: InMemorySpanExporter) -> None:
    trace = tracing.start_batch([InRecord("in", 0, 1, None, b"x")], "fraud")
    trace.end(RuntimeError("redis down"))
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "raylane.batch"]
    assert not batch.status.is_ok and "redis down" in (batch.status.description or "")


def test_context_flows_into_published_and_http_headers(spans: InMemorySpanExporter) -> None:
    rec = InRecord("flagged", 0, 3, None, b"x", [("traceparent", PARENT.encode())])
    with tracing.record_span(rec, "flagged process"), tracing.span("action block"):
        kafka = tracing.headers_with_context([("traceparent", b"stale"), ("a", b"1")])
        http = tracing.http_headers_with_context({"content-type": "application/json"})
    assert [k for k, _ in kafka] == ["a", "traceparent"]
    assert tracing.trace_id_of(kafka) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert http["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    action = next(s for s in spans.get_finished_spans() if s.name == "action block")
    assert action.context is not None
    assert dict(kafka)["traceparent"].decode().split("-")[2] == format(
        action.context.span_id, "016x"
    )
