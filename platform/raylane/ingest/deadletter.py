"""Reading, summarising and replaying a dead-letter topic (``raylane dlq inspect|replay``).

Replay re-publishes a DLQ record's original key, bytes and headers to its source
topic (after a fix: a schema registered, a contract relaxed). It is idempotent by
``event_id``: every replayed record is written to a ledger topic,
``<dlq topic>.replayed`` (key = event_id), and a later replay skips a record whose
event_id was replayed at or after the record was dead-lettered. So replaying the
same DLQ twice publishes each event once; an event that fails again after its
replay is dead-lettered anew (later time) and can be replayed again. Records whose
value was truncated (oversized events) are never replayed.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from raylane.errors import DependencyError, RaylaneError
from raylane.ingest import dlq as D
from raylane.ingest.records import Headers, header

__all__ = [
    "DeadLetter",
    "ReplayReport",
    "describe_value",
    "ledger_topic",
    "parse_since",
    "read_dead_letters",
    "read_topic",
    "replay",
    "summarize",
]

REPLAY_OF = "raylane.replay.of"
REPLAYED_AT = "raylane.replay.at"


def ledger_topic(dlq_topic: str) -> str:
    """The topic recording which event ids a replay has re-published."""
    return f"{dlq_topic}.replayed"


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
        return self._h(D.H_CLASS) or "?"

    @property
    def stage(self) -> str:
        return self._h(D.H_STAGE) or "?"

    @property
    def message(self) -> str:
        return self._h(D.H_MESSAGE)

    @property
    def source_topic(self) -> str:
        return self._h(D.H_TOPIC)

    @property
    def source(self) -> str:
        return f"{self.source_topic}[{self._h(D.H_PARTITION)}]@{self._h(D.H_OFFSET)}"

    @property
    def correlation_id(self) -> str:
        return self._h(D.H_CORRELATION)

    @property
    def time_ms(self) -> int:
        try:
            return int(self._h(D.H_TIME))
        except ValueError:
            return 0

    @property
    def truncated(self) -> bool:
        return self._h(D.H_TRUNCATED) == "true"

    @property
    def original_size(self) -> int:
        size = self._h(D.H_ORIGINAL_SIZE)
        return int(size) if size.isdigit() else len(self.value)

    @property
    def where(self) -> str:
        return f"[{self.partition}]@{self.offset}"

    def original_headers(self) -> Headers:
        """The event's own headers, plus the correlation id it had or was given."""
        own = [(k, v) for k, v in self.headers if not k.startswith("raylane.")]
        if header(own, "correlation_id") is None and self.correlation_id:
            own.append(("correlation_id", self.correlation_id.encode()))
            if self._h(D.H_GENERATED) == "true":
                own.append((D.H_GENERATED, b"true"))
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


async def read_topic(
    bootstrap: str, topic: str, idle_s: float = 1.0, timeout_s: float = 30.0
) -> list[Any]:
    """Every record of `topic` from the beginning.

    Reads at least up to the end offsets the broker reports (waiting up to `timeout_s`
    for them), then until `idle_s` passes without a new record: the embedded broker's
    end offsets can lag the last record, so the end is confirmed by silence.
    """
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 << 20,
    )
    try:
        await c.start()
    except Exception as e:
        await c.stop()
        raise DependencyError(
            f"cannot reach Kafka at {bootstrap}: {e}; is the broker up (`raylane dev status`)?",
            stage="dlq",
        ) from e
    out: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        ends = await c.end_offsets(parts) if parts else {}
        last: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=200)
            for tp, msgs in got.items():
                if msgs:
                    out.extend(msgs)
                    last[tp.partition] = msgs[-1].offset + 1
                    idle_until = time.monotonic() + idle_s
            reached = all(last.get(tp.partition, 0) >= end for tp, end in ends.items())
            if reached and time.monotonic() >= idle_until:
                break
    finally:
        await c.stop()
    out.sort(key=lambda m: (m.partition, m.offset))
    return out


async def read_dead_letters(bootstrap: str, topic: str, idle_s: float = 1.0) -> list[DeadLetter]:
    """Every record of DLQ `topic`, parsed."""
    return [
        DeadLetter(m.partition, m.offset, m.key, m.value or b"", list(m.headers or ()))
        for m in await read_topic(bootstrap, topic, idle_s)
    ]


def summarize(letters: Iterable[DeadLetter]) -> Counter[tuple[str, str]]:
    """Counts by (error class, stage)."""
    return Counter((d.error_class, d.stage) for d in letters)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_since(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from ``30m`` / ``2h`` / ``1d`` (ago) or an ISO time (UTC if no zone)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    m = _DURATION.match(text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now_ms - int(float(m.group(1)) * unit * 1000)
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise RaylaneError(
            f"--since {text!r} is neither a duration (30m, 2h, 1d) nor an ISO time "
            "(2026-11-26T17:00:00Z)",
            stage="dlq",
        ) from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


@dataclass
class ReplayReport:
    dlq_topic: str
    selected: int = 0
    replayed: int = 0
    already_replayed: int = 0
    duplicates: int = 0
    truncated: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)


async def replay(
    bootstrap: str,
    dlq_topic: str,
    *,
    error_class: str | None = None,
    since_ms: int | None = None,
    to_topic: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    registry: Any = None,
    idle_s: float = 1.0,
) -> ReplayReport:
    """Re-publish the selected dead letters to their source topic (or `to_topic`).

    Selection: `error_class` (exact), dead-lettered at or after `since_ms`. Skips
    truncated records and, unless `force`, event ids the ledger shows replayed
    after they were dead-lettered. Waits for every acknowledgement, then writes
    the ledger, so a crash in between replays again (consumers de-duplicate).
    """
    letters = await read_dead_letters(bootstrap, dlq_topic, idle_s)
    ledger: dict[str, int] = {}
    if not force:
        for m in await read_topic(bootstrap, ledger_topic(dlq_topic), idle_s):
            try:
                entry = json.loads(m.value)
                eid, at = str(entry["event_id"]), int(entry["replayed_at"])
            except (ValueError, KeyError, TypeError):
                continue
            ledger[eid] = max(ledger.get(eid, 0), at)
    report = ReplayReport(dlq_topic)
    picked: list[tuple[DeadLetter, str]] = []
    seen: set[str] = set()
    for d in letters:
        if error_class is not None and d.error_class != error_class:
            continue
        if since_ms is not None and d.time_ms < since_ms:
            continue
        report.selected += 1
        if d.truncated:
            report.truncated += 1
            continue
        eid = d.event_id(registry) or f"{dlq_topic}{d.where}"
        if eid in seen:
            report.duplicates += 1
            continue
        if ledger.get(eid, -1) >= d.time_ms:
            report.already_replayed += 1
            continue
        seen.add(eid)
        picked.append((d, eid))
    if dry_run or not picked:
        report.event_ids = [eid for _, eid in picked]
        return report
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        enable_idempotence=False,
        max_request_size=4 << 20,
    )
    try:
        await producer.start()
    except Exception as e:
        await producer.stop()
        raise DependencyError(f"cannot reach Kafka at {bootstrap}: {e}", stage="dlq") from e
    try:
        now = int(time.time() * 1000)
        futs = []
        for d, _ in picked:
            target = to_topic or d.source_topic
            if not target:
                raise RaylaneError(
                    f"{dlq_topic}{d.where} has no {D.H_TOPIC} header; pass --to", stage="dlq"
                )
            hdrs = [*d.original_headers(), (REPLAY_OF, f"{dlq_topic}{d.where}".encode()), (REPLAYED_AT, str(now).encode())]
            futs.append(await producer.send(target, d.value, key=d.key, headers=hdrs))
            report.by_target[target] = report.by_target.get(target, 0) + 1
        for f in futs:
            await f
        ledger_futs = [
            await producer.send(
                ledger_topic(dlq_topic),
                json.dumps(
                    {
                        "event_id": eid,
                        "replayed_at": now,
                        "dlq": f"{dlq_topic}{d.where}",
                        "to": to_topic or d.source_topic,
                    }
                ).encode(),
                key=eid.encode(),
            )
            for d, eid in picked
        ]
        for f in ledger_futs:
            await f
    finally:
        await producer.stop()
    report.replayed = len(picked)
    report.event_ids = [eid for _, eid in picked]
    return report
