"""Stage 1 of a batch: decode and validate each record, dead-letter the ones that fail.

Size limits, formats and every rejection are the codec's (typed
:class:`~raylane.errors.ContractError`); this stage turns each rejection into a
dead-letter record with the original bytes and gives every good event a correlation id
(from the event, else its header, else a new one marked as generated).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raylane.config import PipelineConfig
from raylane.contracts import EventTimeOutOfRange, LimitExceeded
from raylane.errors import RaylaneError
from raylane.kafka.deadletters import dlq_record
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.monitoring.tracing import trace_id_of
from raylane.pipeline.ports import BatchCodec

__all__ = ["CORRELATION_HEADER", "GENERATED_HEADER", "DecodeStage", "Decoded"]

log = logging.getLogger("raylane.pipeline")

CORRELATION_HEADER = "correlation_id"
GENERATED_HEADER = "raylane.correlation_id.generated"


@dataclass
class Decoded:
    """The good events of a batch, each with its record and whether its id was made up."""

    events: list[dict[str, Any]] = field(default_factory=list)
    records: list[InRecord] = field(default_factory=list)
    generated: list[bool] = field(default_factory=list)


#: A correlation id header longer than this is ignored (a new id is made up).
MAX_CORRELATION_BYTES = 256


def header_correlation(rec: InRecord) -> str | None:
    """The record's correlation id header, if it has a UTF-8 one of sane length."""
    raw = header(rec.headers, CORRELATION_HEADER)
    if not raw or len(raw) > MAX_CORRELATION_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def dead_letter(
    cfg: PipelineConfig, rec: InRecord, err: RaylaneError, correlation_id: str | None = None
) -> OutRecord:
    """The DLQ record for `rec` failing with `err`, logged with where it came from."""
    cid = correlation_id or header_correlation(rec)
    made = cid is None
    cid = cid or str(uuid.uuid4())
    log.warning(
        "%s -> %s: %s at %s: %s [correlation_id=%s trace_id=%s]",
        rec.where,
        cfg.input.dlq,
        err.error_class,
        err.stage,
        err.message[:300],
        cid,
        trace_id_of(rec.headers) or "-",
    )
    return dlq_record(
        rec, err, cid, cfg.input.dlq, generated=made, max_bytes=cfg.input.max_event_bytes
    )


class DecodeStage:
    """Decodes a batch with the input codec; rejected records become dead letters."""

    def __init__(self, cfg: PipelineConfig, codec: BatchCodec) -> None:
        self.cfg = cfg
        self.codec = codec
        skew, age = cfg.input.max_future_skew_s, cfg.input.max_event_age_s
        self._max_ahead_ms = None if skew is None else int(skew * 1000)
        self._max_behind_ms = None if age is None else int(age * 1000)

    def _time_error(self, ev: dict[str, Any], rec: InRecord) -> EventTimeOutOfRange | None:
        """The event-time check against the record's broker timestamp, if it fails."""
        et = self.cfg.input.event_time
        t = et.ms_or_none(ev)
        if t is None or not rec.timestamp_ms:
            return None
        name = et.field if et.unit == "ms" else f"{et.field} ({ev[et.field]} {et.unit})"
        ahead = t - rec.timestamp_ms
        if self._max_ahead_ms is not None and ahead > self._max_ahead_ms:
            return EventTimeOutOfRange(
                f"{name} {t} is {ahead / 1000:.0f} s ahead of the broker timestamp "
                f"{rec.timestamp_ms}; input.max_future_skew_s is {self._max_ahead_ms / 1000:g} s",
                path=et.field,
            )
        if self._max_behind_ms is not None and -ahead > self._max_behind_ms:
            return EventTimeOutOfRange(
                f"{name} {t} is {-ahead / 1000:.0f} s behind the broker timestamp "
                f"{rec.timestamp_ms}; input.max_event_age_s is {self._max_behind_ms / 1000:g} s",
                path=et.field,
            )
        return None

    def _envelope_error(self, rec: InRecord) -> LimitExceeded | None:
        """Key and headers against the input limits (checked before decoding)."""
        inp = self.cfg.input
        if rec.key is not None and len(rec.key) > inp.max_key_bytes:
            return LimitExceeded(
                f"key of {len(rec.key)} bytes exceeds input.max_key_bytes={inp.max_key_bytes}"
            )
        size = sum(len(k) + len(v or b"") for k, v in rec.headers)
        if size > inp.max_header_bytes:
            return LimitExceeded(
                f"{len(rec.headers)} headers of {size} bytes exceed "
                f"input.max_header_bytes={inp.max_header_bytes}"
            )
        return None

    def _string_error(self, ev: Any, path: str = "") -> LimitExceeded | None:
        """The first string field (any depth) longer than input.max_string_chars."""
        limit = self.cfg.input.max_string_chars
        items = ev.items() if isinstance(ev, dict) else enumerate(ev)
        for k, v in items:
            if isinstance(v, str):
                if len(v) > limit:
                    where = f"{path}.{k}" if path else str(k)
                    return LimitExceeded(
                        f"{where}: string of {len(v)} characters exceeds "
                        f"input.max_string_chars={limit}"
                    )
            elif isinstance(v, (dict, list)):
                found = self._string_error(v, f"{path}.{k}" if path else str(k))
                if found is not None:
                    return found
        return None

    def __call__(self, records: Sequence[InRecord], dlq: list[OutRecord]) -> Decoded:
        fit: list[InRecord] = []
        for rec in records:
            if rec.skipped is not None:  # a record batch the consumer could not read
                dlq.append(dead_letter(self.cfg, rec, rec.skipped.error))
                continue
            bad_envelope = self._envelope_error(rec)
            if bad_envelope is None:
                fit.append(rec)
            else:
                dlq.append(dead_letter(self.cfg, rec, bad_envelope))
        records = fit
        oks, errs = self.codec.decode_batch([r.value or b"" for r in records])
        for j, err in errs:
            dlq.append(dead_letter(self.cfg, records[j], err))
        out = Decoded()
        check_time = self._max_ahead_ms is not None or self._max_behind_ms is not None
        max_chars = self.cfg.input.max_string_chars
        for j, ev in oks:
            rec = records[j]
            # a string of N characters takes at least N bytes (Avro and JSON alike), so only
            # a value longer than the limit can hold one: the walk costs nothing normally
            too_long = self._string_error(ev) if len(rec.value or b"") > max_chars else None
            if too_long is not None:
                dlq.append(dead_letter(self.cfg, rec, too_long))
                continue
            if check_time:
                bad = self._time_error(ev, rec)
                if bad is not None:
                    cid = ev.get("correlation_id") or None
                    dlq.append(dead_letter(self.cfg, rec, bad, cid))
                    continue
            gen = False
            if not ev.get("correlation_id"):
                from_header = header_correlation(rec)
                if from_header is None:
                    from_header, gen = str(uuid.uuid4()), True
                else:  # a replayed event keeps the mark of an id made up on its first pass
                    gen = header(rec.headers, GENERATED_HEADER) == b"true"
                ev["correlation_id"] = from_header
            out.events.append(ev)
            out.records.append(rec)
            out.generated.append(gen)
        return out
