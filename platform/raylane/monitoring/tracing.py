"""OpenTelemetry traces across the data path, off unless the standard ``OTEL_*`` variables ask.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP endpoint
is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); off with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. The OTLP exporter (HTTP/protobuf)
and the sampler read their own ``OTEL_*`` settings. Off, every call here is a constant
no-op: nothing is created per batch or per event.

The W3C ``traceparent`` (and ``tracestate``) travel in Kafka headers. The ingress works in
batches: a batch span whose children are the stages (decode, features, score, decision,
encode, publish, commit; the shadow call links to it). An event whose producer sent a
trace context keeps its trace: the ingress gives it a span of its own, the child of that
context, linked to the batch span, and its outputs carry that span's context. An event
without one (its producer does not trace) costs no span: its outputs carry the batch
span's context. Either way the action runner's spans (and ``payments.blocked``, and a
webhook's ``traceparent`` header) continue the trace of the output they act on.
Sampling is the producers' and the SDK's (``OTEL_TRACES_SAMPLER``, parent-based by
default): an unsampled producer context gives a non-recording span.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from raylane.kafka.records import Headers, InRecord, OutRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "NO_TRACE",
    "TRACE_HEADERS",
    "AnyBatchTrace",
    "BatchTrace",
    "configure",
    "enabled",
    "from_env",
    "headers_with_context",
    "http_headers_with_context",
    "linked_span",
    "record_span",
    "span",
    "start_batch",
    "trace_id_of",
    "use",
]

#: the propagated headers (W3C Trace Context)
TRACE_HEADERS = ("traceparent", "tracestate")

_tracer: trace.Tracer | None = None


def from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The exporter the ``OTEL_*`` variables ask for (``otlp``, ``console``), or None: off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name:
        return None if name == "none" else name.split(",")[0].strip()
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def configure(component: str) -> bool:
    """Turn tracing on for this process if the environment asks; True when it is on.

    `component` names the service (``raylane-<component>``) unless ``OTEL_SERVICE_NAME``
    does. Idempotent: the first call in a process decides.
    """
    global _tracer
    if _tracer is not None:
        return True
    exporter = from_env()
    if exporter is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from raylane.errors import ConfigError

    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter: Any = OTLPSpanExporter()
    elif exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter!r} is not supported by raylane; use otlp "
            "(with OTEL_EXPORTER_OTLP_ENDPOINT), console, or none",
            stage="config",
        )
    name = os.environ.get("OTEL_SERVICE_NAME") or f"raylane-{component}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace with `provider` (tests: an in-memory exporter); None turns tracing off."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("raylane")


def enabled() -> bool:
    return _tracer is not None


def trace_id_of(headers: Headers) -> str | None:
    """The trace id (hex) of a record's ``traceparent`` header, if it has a valid one."""
    ctx = trace.get_current_span(extract(_Carrier(headers))).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class _Carrier(MutableMapping[str, str]):
    """Kafka headers (a list of (str, bytes)) as the text map the propagators read and write."""

    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    def __getitem__(self, key: str) -> str:
        for k, v in reversed(self.headers):
            if k == key:
                return v.decode("latin-1")
        raise KeyError(key)

    def __setitem__(self, key: str, value: str) -> None:
        self.headers[:] = [(k, v) for k, v in self.headers if k != key]
        self.headers.append((key, value.encode("latin-1")))

    def __delitem__(self, key: str) -> None:
        self.headers[:] = [(k, v) for k, v in self.headers if k != key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self.headers))

    def __len__(self) -> int:
        return len({k for k, _ in self.headers})


def headers_with_context(headers: Headers) -> Headers:
    """`headers` plus the current span's ``traceparent`` (unchanged when tracing is off)."""
    if _tracer is None:
        return headers
    out = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
    inject(_Carrier(out))
    return out


def http_headers_with_context(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP `headers` plus the current span's ``traceparent`` (a webhook's request)."""
    out = dict(headers)
    if _tracer is not None:
        inject(out)
    return out


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current context (nothing when tracing is off)."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


@contextlib.contextmanager
def record_span(rec: InRecord, name: str, **attributes: Any) -> Iterator[None]:
    """A consumer span for one record, the child of the context in its headers; current
    while the block runs, so spans and injected headers inside continue the record's trace."""
    if _tracer is None:
        yield
        return
    parent = extract(_Carrier(list(rec.headers)))
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": rec.topic,
            "messaging.destination.partition.id": str(rec.partition),
            "messaging.kafka.offset": rec.offset,
            **attributes,
        },
    ):
        yield


class BatchTrace:
    """The spans of one ingress batch: the batch, its stages, and one span per event."""

    def __init__(self, tracer: trace.Tracer, records: Sequence[InRecord], pipeline: str) -> None:
        self._tracer = tracer
        self.batch = tracer.start_span(
            "raylane.batch",
            kind=SpanKind.CONSUMER,
            attributes={
                "raylane.pipeline": pipeline,
                "messaging.batch.message_count": len(records),
            },
        )
        self._batch_ctx = trace.set_span_in_context(self.batch)
        link = [Link(self.batch.get_span_context())]
        self._events: dict[int, trace.Span] = {}
        for rec in records:
            if not any(k == "traceparent" for k, _ in rec.headers):
                continue  # untraced producer: its outputs carry the batch's context
            parent = extract(_Carrier(list(rec.headers)))
            if not trace.get_current_span(parent).get_span_context().is_valid:
                continue
            self._events[id(rec)] = tracer.start_span(
                f"{rec.topic} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=link,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": rec.topic,
                    "messaging.destination.partition.id": str(rec.partition),
                    "messaging.kafka.offset": rec.offset,
                    "raylane.pipeline": pipeline,
                },
            )

    @property
    def link(self) -> Any:
        """The batch span's context, for spans that belong to the batch but run later."""
        return self.batch.get_span_context()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A child span of the batch for one stage (an error marks it and propagates)."""
        with self._tracer.start_as_current_span(name, context=self._batch_ctx):
            yield

    def stamp(self, outputs: Sequence[OutRecord], sources: Sequence[InRecord]) -> None:
        """Give each output its event's span context (``traceparent``) in its headers: the
        event's own span, or the batch span for an event whose producer sent none."""
        done: set[int] = set()
        for out, src in zip(outputs, sources, strict=True):
            if id(out.headers) in done:
                continue  # outputs of one event share one header list
            done.add(id(out.headers))
            ev = self._events.get(id(src))
            ctx = self._batch_ctx if ev is None else trace.set_span_in_context(ev)
            inject(_Carrier(out.headers), context=ctx)

    def end(self, error: BaseException | None = None) -> None:
        for ev in self._events.values():
            ev.end()
        if error is not None:
            self.batch.record_exception(error)
            self.batch.set_status(Status(StatusCode.ERROR, str(error)))
        self.batch.end()


class _NoTrace:
    """What :func:`start_batch` returns when tracing is off: every method does nothing."""

    link = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def stamp(self, outputs: Sequence[OutRecord], sources: Sequence[InRecord]) -> None:
        return None

    def end(self, error: BaseException | None = None) -> None:
        return None


NO_TRACE = _NoTrace()

#: a batch's trace, on or off
AnyBatchTrace = BatchTrace | _NoTrace


def start_batch(records: Sequence[InRecord], pipeline: str) -> AnyBatchTrace:
    """The trace of a batch the ingress took (:data:`NO_TRACE` when tracing is off)."""
    if _tracer is None:
        return NO_TRACE
    return BatchTrace(_tracer, records, pipeline)


@contextlib.contextmanager
def linked_span(name: str, link: Any, **attributes: Any) -> Iterator[None]:
    """A new span linked to `link` (a span context, e.g. :attr:`BatchTrace.link`)."""
    if _tracer is None or link is None:
        yield
        return
    with _tracer.start_as_current_span(name, links=[Link(link)], attributes=attributes):
        yield
