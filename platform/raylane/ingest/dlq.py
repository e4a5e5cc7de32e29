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

The record's own headers follow, unchanged, and its key and value are the
original bytes.
"""

from __future__ import annotations

import time

from raylane.errors import RaylaneError
from raylane.ingest.records import InRecord, OutRecord

__all__ = [
    "H_CLASS",
    "H_CORRELATION",
    "H_MESSAGE",
    "H_OFFSET",
    "H_PARTITION",
    "H_STAGE",
    "H_TIME",
    "H_TOPIC",
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

_MAX_MESSAGE = 2000


def dlq_record(rec: InRecord, err: RaylaneError, correlation_id: str, dlq_topic: str) -> OutRecord:
    """The DLQ record for `rec`, which failed with `err`."""
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
    original = [(k, v) for k, v in rec.headers if not k.startswith("raylane.")]
    return OutRecord(topic=dlq_topic, key=rec.key, value=rec.value or b"", headers=ours + original)
