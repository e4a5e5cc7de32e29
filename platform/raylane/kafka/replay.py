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

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from raylane.errors import DependencyError, RaylaneError
from raylane.kafka import deadletters as D
from raylane.kafka.client import KafkaConnection, connection
from raylane.kafka.deadletters import DeadLetter
from raylane.kafka.reader import read_topic
from raylane.kafka.records import header

__all__ = [
    "ReplayReport",
    "batch_records",
    "ledger_topic",
    "parse_since",
    "read_dead_letters",
    "replay",
    "summarize",
]

REPLAY_OF = "raylane.replay.of"
REPLAYED_AT = "raylane.replay.at"


def ledger_topic(dlq_topic: str) -> str:
    """The topic recording which event ids a replay has re-published."""
    return f"{dlq_topic}.replayed"


async def read_dead_letters(
    bootstrap: str | KafkaConnection, topic: str, idle_s: float = 1.0
) -> list[DeadLetter]:
    """Every record of DLQ `topic`, parsed."""
    return [
        DeadLetter(m.partition, m.offset, m.key, m.value or b"", list(m.headers or ()))
        for m in await read_topic(bootstrap, topic, idle_s, stage="dlq")
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
    #: skipped: dead letters of record batches the ingress could not read that still cannot
    #: be read (or no `max_batch_bytes` was given)
    batches: int = 0
    #: dead letters read from the DLQ topic (all of it, or the command fails)
    read: int = 0
    #: skipped: their source topic is not an input of the given pipelines (and no `to_topic`)
    foreign: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Pick:
    """One record to re-publish: a dead-lettered event, or one record of a dead-lettered
    record batch."""

    letter: DeadLetter
    eid: str
    key: bytes | None
    value: bytes | None  # None: a tombstone in a replayed batch
    headers: list[tuple[str, bytes]]


def batch_records(letter: DeadLetter, max_bytes: int) -> list[Any]:
    """The records of a dead-lettered record batch, from the first offset it dead-lettered
    on, read by aiokafka with decompression bounded by `max_bytes`. Raises
    :class:`RaylaneError` when they still cannot be read (the codec is still missing, the
    batch is still larger than `max_bytes`, it is corrupt)."""
    from raylane.kafka import batches

    raw = header(letter.headers, D.H_BATCH) or b""
    m = re.fullmatch(rb"(\d+)\.\.(\d+) \S+", raw)
    if m is None:
        raise RaylaneError(f"{letter.where}: no batch header {D.H_BATCH!r}", stage="dlq")
    q = batches.Quarantine(max_bytes)
    part = int(header(letter.headers, D.H_PARTITION) or b"0")
    recs, reached = batches.parse(letter.value, letter.source_topic, part, int(m.group(1)), q)
    for _, b in q.skipped:
        raise RaylaneError(f"{letter.where}: {b.error.message}", stage="dlq")
    last = int(m.group(2))
    if reached <= last:  # put off, a CRC retry, or nothing read
        raise RaylaneError(
            f"{letter.where}: the batch was not read to its last offset {last}", stage="dlq"
        )
    return recs


async def replay(
    bootstrap: str | KafkaConnection,
    dlq_topic: str,
    *,
    error_class: str | None = None,
    since_ms: int | None = None,
    to_topic: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    registry: Any = None,
    idle_s: float = 1.0,
    allowed_topics: Collection[str] | None = None,
    max_batch_bytes: int | None = None,
) -> ReplayReport:
    """Re-publish the selected dead letters to their source topic (or `to_topic`).

    Selection: `error_class` (exact), dead-lettered at or after `since_ms`. Skips
    truncated records, record batches the ingress could not read (not events) and,
    unless `force`, event ids the ledger shows replayed after they were dead-lettered.
    Without `to_topic`, a record goes back only to a source topic in `allowed_topics` (the
    pipelines' configured inputs; a DLQ record's header is data and must not pick any topic
    it likes): the others are counted as `foreign` and skipped. Waits for every
    acknowledgement, then writes the ledger, so a crash in between replays again (consumers
    de-duplicate). Reading the DLQ or its ledger short of their end raises instead of
    replaying part of it.

    A record batch the ingress could not read is replayed record by record when
    `max_batch_bytes` is given and the batch can now be read (its codec installed, or the
    pipeline's ``input.max_decompressed_batch_bytes`` raised to that figure); otherwise it
    is counted in `batches` and skipped.
    """
    if to_topic is None and allowed_topics is None:
        raise RaylaneError(
            f"replaying {dlq_topic} needs the topics its records may go back to "
            "(allowed_topics: the pipeline's inputs) or one target (to_topic)",
            stage="dlq",
        )
    letters = await read_dead_letters(bootstrap, dlq_topic, idle_s)
    ledger: dict[str, int] = {}
    if not force:
        for m in await read_topic(bootstrap, ledger_topic(dlq_topic), idle_s, stage="dlq"):
            try:
                entry = json.loads(m.value)
                eid, at = str(entry["event_id"]), int(entry["replayed_at"])
            except (ValueError, KeyError, TypeError):
                continue
            ledger[eid] = max(ledger.get(eid, 0), at)
    report = ReplayReport(dlq_topic, read=len(letters))
    picked: list[_Pick] = []
    seen: set[str] = set()
    for d in letters:
        if error_class is not None and d.error_class != error_class:
            continue
        if since_ms is not None and d.time_ms < since_ms:
            continue
        report.selected += 1
        if to_topic is None and allowed_topics is not None and d.source_topic not in allowed_topics:
            report.foreign += 1
            continue
        if d.is_batch:
            recs = None
            if max_batch_bytes is not None and not d.truncated:
                with contextlib.suppress(RaylaneError):  # still unreadable: counted below
                    recs = batch_records(d, max_batch_bytes)
            if recs is None:
                report.batches += 1
                continue
            candidates: list[_Pick] = []
            for r in recs:
                hdrs = list(r.headers or ())
                own = DeadLetter(d.partition, d.offset, r.key, r.value or b"", hdrs).event_id(
                    registry
                )
                eid = own or f"{dlq_topic}{d.where}@{r.offset}"
                candidates.append(_Pick(d, eid, r.key, r.value, hdrs))
        elif d.truncated:
            report.truncated += 1
            continue
        else:
            eid = d.event_id(registry) or f"{dlq_topic}{d.where}"
            candidates = [_Pick(d, eid, d.key, d.value, d.original_headers())]
        for c in candidates:
            if c.eid in seen:
                report.duplicates += 1
                continue
            if ledger.get(c.eid, -1) >= d.time_ms:
                report.already_replayed += 1
                continue
            seen.add(c.eid)
            picked.append(c)
    if dry_run or not picked:
        report.event_ids = [c.eid for c in picked]
        return report
    conn = connection(bootstrap)
    producer = conn.producer(linger_ms=2, max_request_size=4 << 20)
    try:
        await producer.start()
    except Exception as e:
        await producer.stop()
        if isinstance(e, RaylaneError):  # a refused login says so itself
            raise
        raise DependencyError(f"cannot reach Kafka at {conn.bootstrap}: {e}", stage="dlq") from e
    try:
        now = int(time.time() * 1000)
        futs = []
        for c in picked:
            d = c.letter
            target = to_topic or d.source_topic
            if not target:
                raise RaylaneError(
                    f"{dlq_topic}{d.where} has no {D.H_TOPIC} header; pass --to", stage="dlq"
                )
            hdrs = [
                *c.headers,
                (REPLAY_OF, f"{dlq_topic}{d.where}".encode()),
                (REPLAYED_AT, str(now).encode()),
            ]
            futs.append(await producer.send(target, c.value, key=c.key, headers=hdrs))
            report.by_target[target] = report.by_target.get(target, 0) + 1
        for f in futs:
            await f
        ledger_futs = [
            await producer.send(
                ledger_topic(dlq_topic),
                json.dumps(
                    {
                        "event_id": c.eid,
                        "replayed_at": now,
                        "dlq": f"{dlq_topic}{c.letter.where}",
                        "to": to_topic or c.letter.source_topic,
                    }
                ).encode(),
                key=c.eid.encode(),
            )
            for c in picked
        ]
        for f in ledger_futs:
            await f
    finally:
        await producer.stop()
    report.replayed = len(picked)
    report.event_ids = [c.eid for c in picked]
    return report
