"""Dead-letter records: the original bytes plus headers that say what went wrong.

Header standard (every DLQ record carries all of these, values UTF-8):

=============================  ==============================================
``raylane.error.class``        error class, e.g. ``TruncatedEvent``
``raylane.error.message``      human-readable message (what and how to fix)
``raylane.error.stage``        data-path stage: decode, validate, ...
``raylane.source.topic``       topic the record was read from
``raylane.source.partition``   its partition
``raylane.source.offset``      its offset
``raylane.correlation_id``     the event's correlation id (generated if absent)
``raylane.error.time``         when it was dead-lettered, epoch ms
=============================  ==============================================

Only when they apply:

=====================================  ======================================
``raylane.correlation_id.generated``   ``true``: the event came without a
                                       correlation id; the ingress made one
``raylane.dlq.truncated``              ``true``: the value is cut (see below)
``raylane.dlq.original_size``          size of the original value in bytes
``raylane.dlq.key_truncated``          size of the original key: it was cut to
                                       :data:`DLQ_KEEP_KEY_BYTES` (1 KiB)
``raylane.dlq.headers_dropped``        ``N headers, B bytes``: the record's own
                                       headers were over 16 KiB, not copied
=====================================  ======================================

The record's own headers follow, unchanged (except ``raylane.*`` ones, which
would clash), and its key and value are the original bytes. A value larger than
the pipeline's ``input.max_event_bytes`` is kept only up to :data:`DLQ_KEEP_BYTES`
(64 KiB), so one oversized event cannot make the DLQ write fail; such records
are for inspection and are never replayed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from raylane.errors import RaylaneError
from raylane.kafka.records import Headers, InRecord, OutRecord, header

__all__ = [
    "DLQ_KEEP_BYTES",
    "H_BATCH",
    "H_CLASS",
    "H_CORRELATION",
    "H_GENERATED",
    "H_HEADERS_DROPPED",
    "H_KEY_TRUNCATED",
    "H_MESSAGE",
    "H_OFFSET",
    "H_ORIGINAL_SIZE",
    "H_PARTITION",
    "H_STAGE",
    "H_TIME",
    "H_TOPIC",
    "H_TRUNCATED",
    "DeadLetter",
    "describe_value",
    "dlq_record",
]

H_CLASS = "raylane.error.class"
H_MESSAGE = "raylane.error.message"
H_STAGE = "raylane.error.stage"
H_TOPIC = "raylane.source.topic"
H_PARTITION = "raylane.source.partition"
H_OFFSET = "raylane.source.offset"
H_CORRELATION = "raylane.correlation_id"
H_TIME = "raylane.error.time"
H_GENERATED = "raylane.correlation_id.generated"
H_TRUNCATED = "raylane.dlq.truncated"
H_ORIGINAL_SIZE = "raylane.dlq.original_size"
H_KEY_TRUNCATED = "raylane.dlq.key_truncated"
H_HEADERS_DROPPED = "raylane.dlq.headers_dropped"
#: on the dead letter of a record batch the ingress could not read: "<first>..<last> <codec>";
#: its value is the raw batch, not an event
H_BATCH = "raylane.dlq.batch"

#: Bytes of an oversized key kept in its DLQ record.
DLQ_KEEP_KEY_BYTES = 1024
#: Bytes of the record's own headers a DLQ record keeps at most (else it keeps none).
DLQ_KEEP_HEADER_BYTES = 16 << 10

#: Bytes of an oversized value kept in its DLQ record.
DLQ_KEEP_BYTES = 64 << 10

_MAX_MESSAGE = 2000


def dlq_record(
    rec: InRecord,
    err: RaylaneError,
    correlation_id: str,
    dlq_topic: str,
    *,
    generated: bool = False,
    max_bytes: int | None = None,
) -> OutRecord:
    """The DLQ record for `rec`, which failed with `err`.

    `generated` marks a correlation id the ingress made up; a value over `max_bytes`
    is cut to :data:`DLQ_KEEP_BYTES` and marked truncated.
    """
    value = rec.value or b""
    ours = [
        (H_CLASS, err.error_class.encode()),
        (H_MESSAGE, err.message[:_MAX_MESSAGE].encode("utf-8", "replace")),
        (H_STAGE, err.stage.encode()),
        (H_TOPIC, rec.topic.encode()),
        (H_PARTITION, str(rec.partition).encode()),
        (H_OFFSET, str(rec.offset).encode()),
        (H_CORRELATION, correlation_id.encode()),
        (H_TIME, str(int(time.time() * 1000)).encode()),
    ]
    if generated:
        ours.append((H_GENERATED, b"true"))
    if rec.skipped is not None:
        b = rec.skipped
        ours.append((H_BATCH, f"{b.first_offset}..{b.next_offset - 1} {b.codec}".encode()))
    if max_bytes is not None and len(value) > max_bytes:
        ours += [(H_TRUNCATED, b"true"), (H_ORIGINAL_SIZE, str(len(value)).encode())]
        value = value[:DLQ_KEEP_BYTES]
    key = rec.key
    if key is not None and len(key) > DLQ_KEEP_KEY_BYTES:
        ours += [(H_KEY_TRUNCATED, str(len(key)).encode())]
        key = key[:DLQ_KEEP_KEY_BYTES]
    original = [(k, v) for k, v in rec.headers if not k.startswith("raylane.")]
    size = sum(len(k) + len(v or b"") for k, v in original)
    if size > DLQ_KEEP_HEADER_BYTES:  # a DLQ record must never exceed what the broker takes
        ours.append((H_HEADERS_DROPPED, f"{len(original)} headers, {size} bytes".encode()))
        original = []
    return OutRecord(topic=dlq_topic, key=key, value=value, headers=ours + original)


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record with its standard headers parsed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(repr=False)

    def _h(self, name: str) -> str:
        raw = header(self.headers, name)
        return raw.decode("utf-8", "replace") if raw is not None else ""

    @property
    def error_class(self) -> str:
        return self._h(H_CLASS) or "?"

    @property
    def stage(self) -> str:
        return self._h(H_STAGE) or "?"

    @property
    def message(self) -> str:
        return self._h(H_MESSAGE)

    @property
    def source_topic(self) -> str:
        return self._h(H_TOPIC)

    @property
    def source(self) -> str:
        return f"{self.source_topic}[{self._h(H_PARTITION)}]@{self._h(H_OFFSET)}"

    @property
    def correlation_id(self) -> str:
        return self._h(H_CORRELATION)

    @property
    def time_ms(self) -> int:
        try:
            return int(self._h(H_TIME))
        except ValueError:
            return 0

    @property
    def is_batch(self) -> bool:
        """A record batch the ingress could not read (its value is the raw batch)."""
        return header(self.headers, H_BATCH) is not None

    @property
    def truncated(self) -> bool:
        return self._h(H_TRUNCATED) == "true"

    @property
    def original_size(self) -> int:
        size = self._h(H_ORIGINAL_SIZE)
        return int(size) if size.isdigit() else len(self.value)

    @property
    def where(self) -> str:
        return f"[{self.partition}]@{self.offset}"

    def original_headers(self) -> Headers:
        """The event's own headers, plus the correlation id it had or was given."""
        own = [(k, v) for k, v in self.headers if not k.startswith("raylane.")]
        if header(own, "correlation_id") is None and self.correlation_id:
            own.append(("correlation_id", self.correlation_id.encode()))
            if self._h(H_GENERATED) == "true":
                own.append((H_GENERATED, b"true"))
        return own

    def event_id(self, registry: Any = None) -> str | None:
        """The event's id: its ``event_id`` header, else read from the value if it decodes."""
        own = header(self.headers, "event_id")
        if own:
            return own.decode("utf-8", "replace")
        decoded = _decode(self.value, registry)
        if isinstance(decoded, dict) and decoded.get("event_id"):
            return str(decoded["event_id"])
        return None


def _decode(value: bytes, registry: Any, subject: str | None = None) -> Any:
    """The value as far as it decodes: a dict, or None.

    Avro is read with its writer schema by id; when the id is unknown and `subject`
    is given, with the subject's latest schema (a guess, labelled by the caller).
    """
    if value[:1] == b"{":
        try:
            return json.loads(value)
        except ValueError:
            return None
    if len(value) >= 5 and value[0] == 0 and registry is not None:
        from fastavro import schemaless_reader

        sid = int.from_bytes(value[1:5], "big")
        try:
            try:
                schema = registry.get_by_id(sid)
            except RaylaneError:
                if subject is None:
                    return None
                schema = registry.latest(subject).schema
            return schemaless_reader(BytesIO(value[5:]), schema, None)
        except Exception:
            return None
    return None


def describe_value(
    value: bytes, registry: Any = None, subject: str | None = None, width: int = 200
) -> str:
    """A short human description of a dead letter's bytes, decoded as far as possible."""
    if not value:
        return "(empty)"
    head = f"{len(value)} B"
    if value[0] == 0 and len(value) >= 5:
        sid = int.from_bytes(value[1:5], "big")
        known = True
        if registry is not None:
            try:
                registry.get_by_id(sid)
            except RaylaneError:
                known = False
        decoded = _decode(value, registry, subject)
        how = "" if known else f" (unknown; read as {subject} latest)" if decoded else " (unknown)"
        body = json.dumps(decoded, default=str) if decoded is not None else value[5:37].hex()
        return f"{head}, Avro schema id {sid}{how}: {body}"[:width]
    decoded = _decode(value, registry)
    if decoded is not None:
        return f"{head}, JSON: {json.dumps(decoded, default=str)}"[:width]
    return f"{head}: {value[:64]!r}"[:width]
