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
=====================================  ======================================

The record's own headers follow, unchanged (except ``raylane.*`` ones, which
would clash), and its key and value are the original bytes. A value larger than
the pipeline's ``input.max_event_bytes`` is kept only up to :data:`DLQ_KEEP_BYTES`
(64 KiB), so one oversized event cannot make the DLQ write fail; such records
are for inspection and are never replayed.
"""

from __future__ import annotations

import time

from raylane.errors import RaylaneError
from raylane.ingest.records import InRecord, OutRecord

__all__ = [
    "DLQ_KEEP_BYTES",
    "H_CLASS",
    "H_CORRELATION",
    "H_GENERATED",
    "H_MESSAGE",
    "H_OFFSET",
    "H_ORIGINAL_SIZE",
    "H_PARTITION",
    "H_STAGE",
    "H_TIME",
    "H_TOPIC",
    "H_TRUNCATED",
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
    if max_bytes is not None and len(value) > max_bytes:
        ours += [(H_TRUNCATED, b"true"), (H_ORIGINAL_SIZE, str(len(value)).encode())]
        value = value[:DLQ_KEEP_BYTES]
    original = [(k, v) for k, v in rec.headers if not k.startswith("raylane.")]
    return OutRecord(topic=dlq_topic, key=rec.key, value=value, headers=ours + original)
