"""Record batches a consumer cannot read: bounded decompression and going past them.

aiokafka decompresses a whole record batch in memory with no limit, and raises from
``getmany`` on a batch it cannot read (a CRC that fails, a codec it lacks, a record that
does not parse), again on every fetch: one crafted batch stops a partition for good, and a
compression bomb can exhaust a replica's memory, then the restarted replica's.

:func:`reading` puts a :class:`Quarantine` in force for the ``getmany`` calls made inside
it (a context variable, so other consumers in the process keep aiokafka's behaviour):

- gzip batches are inflated with ``zlib`` up to ``max_decompressed_bytes`` and no further;
  other codecs (which aiokafka decodes only with ``cramjam`` installed) are checked after
  decoding; the same figure bounds all the batches of one block together (a batch that fits
  alone but not with the others waits for the next fetch, once);
- a batch that cannot be read ends the partition's fetch result just before it; the
  consumer's position moves past it, and the quarantine keeps a :class:`SkippedBatch`
  (offsets, codec, typed error, raw bytes) that the caller turns into a dead letter,
  committed with its batch like any record;
- a CRC failure is refetched once first (a fault on the wire does not repeat).

Records fetched before the bad batch are returned as usual; nothing after it is dropped:
the fetch resumes at the batch's next offset. The hooks are installed into aiokafka's
record parsing once (:func:`install`); without a quarantine in force they only forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from raylane.errors import ContractError, RaylaneError
from raylane.kafka.records import InRecord, SkippedBatch

__all__ = [
    "CorruptBatch",
    "DecompressedTooLarge",
    "Quarantine",
    "UnreadableBatch",
    "UnsupportedCodec",
    "bounded_gunzip",
    "describe_batch",
    "install",
    "parse",
    "reading",
]

log = logging.getLogger("raylane.kafka")

CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class UnreadableBatch(ContractError):
    """A Kafka record batch the ingress cannot read, so none of its records reach decoding.

    Its dead letter holds the batch's raw bytes as the broker sent them (cut like any
    oversize value) and the offsets it spans; the consumer goes on after the batch.
    """

    default_stage = "fetch"


class DecompressedTooLarge(UnreadableBatch):
    """The batch decompresses to more than ``input.max_decompressed_batch_bytes``
    (a compression bomb); decompression stopped at the limit."""


class UnsupportedCodec(UnreadableBatch):
    """The batch is compressed with a codec this install cannot decode."""


class CorruptBatch(UnreadableBatch):
    """The batch fails its CRC on two fetches, or a record in it does not parse; the
    records of the batch from the failing one on cannot be read."""


_ACTIVE: contextvars.ContextVar[Quarantine | None] = contextvars.ContextVar(
    "raylane_batch_quarantine", default=None
)


class _TooLarge(Exception):
    """Raised inside aiokafka's parsing when a batch inflates past the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"decompressed size exceeds {limit} bytes")
        self.limit = limit


class _Later(Exception):
    """Raised inside aiokafka's parsing when a batch fits the limit but not what is left of
    this fetch's budget: the fetch result ends before it and the next fetch reads it."""


def bounded_gunzip(payload: Any, limit: int) -> bytes:
    """Inflate a gzip payload (one or more members), never producing more than `limit` bytes.

    Raises :class:`_TooLarge` at the limit and ``zlib.error``/``EOFError`` on a stream that
    is corrupt or cut short, as ``gzip`` would (zero padding between and after members is
    skipped, as ``gzip.GzipFile`` does).
    """
    data = bytes(payload)
    out: list[bytes] = []
    total = 0
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = d.decompress(data, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise _TooLarge(limit)
        out.append(chunk)
        if not d.eof:
            raise EOFError("compressed record batch ended before the end of its gzip stream")
        data = d.unused_data.lstrip(b"\0")
    return out[0] if len(out) == 1 else b"".join(out)


@dataclass
class Quarantine:
    """What one consumer does with batches it cannot read; see the module docstring.

    ``max_decompressed_bytes`` bounds one batch, and also all that the batches decompressed
    in one :func:`reading` block add up to (their records are held until it returns).
    """

    max_decompressed_bytes: int
    skipped: list[tuple[Any, SkippedBatch]] = field(default_factory=list)
    #: bytes decompressed since the budget was last reset
    used: int = 0
    #: a batch was put off to the next fetch since the budget was last reset
    later: bool = False
    #: (topic, partition, offset) of the batch being read, and of batches put off once
    current: tuple[str, int, int] | None = None
    deferred: set[tuple[str, int, int] | None] = field(default_factory=set)
    #: (topic, partition, offset) of CRC failures seen once: the second one is final
    _crc_once: set[tuple[str, int, int]] = field(default_factory=set)

    def take(self) -> list[InRecord]:
        """Stand-ins for the batches skipped since the last call, in the order met."""
        out = [
            InRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=b.next_offset - 1,
                key=None,
                value=b.raw,
                skipped=b,
            )
            for tp, b in self.skipped
        ]
        self.skipped.clear()
        return out

    def _admit(self, size: int) -> None:
        """Count `size` inflated bytes of the batch being read against the budget: raises
        :class:`_TooLarge` past the per-batch limit, :class:`_Later` past what is left
        (unless the batch already waited once: it then gets in whatever the others hold,
        so a partition behind a busy one is not starved; memory is then at most twice the
        limit)."""
        limit = self.max_decompressed_bytes
        if size > limit:
            raise _TooLarge(limit)
        if size > limit - self.used and self.current not in self.deferred:
            self.deferred.add(self.current)
            self.later = True
            raise _Later()
        self.deferred.discard(self.current)
        self.used += size

    def _skip(self, tp: Any, records: Any, start: int, exc: BaseException) -> int | None:
        """The offset to go on from after the batch the consumer was reading (from offset
        `start` on) failed with `exc`, or None to end this fetch result at `start` and read
        the batch again."""
        raw: bytes | None = getattr(records, "raw", None)
        span: tuple[int, int | None] | None = getattr(records, "last", None)
        from aiokafka.errors import CorruptRecordException, UnsupportedCodecError

        crc = isinstance(exc, CorruptRecordException)
        if crc:
            key = (tp.topic, tp.partition, start)
            if key not in self._crc_once:
                if len(self._crc_once) > 10_000:  # wire faults that healed: forget them
                    self._crc_once.clear()
                self._crc_once.add(key)
                log.warning("%s[%d]@%d: %s; fetching it again", tp.topic, tp.partition, start, exc)
                return None
            self._crc_once.discard(key)
        found = describe_batch(raw, span, start, trust_header=not crc)
        nxt, codec, body = found if found is not None else (start + 1, "?", b"")
        where = f"at offsets {start}..{nxt - 1}"
        error: RaylaneError
        if isinstance(exc, _TooLarge):
            error = DecompressedTooLarge(
                f"{codec} record batch {where} decompresses to more than "
                f"input.max_decompressed_batch_bytes={exc.limit}; raise the limit if batches "
                "this large are expected"
            )
        elif isinstance(exc, UnsupportedCodecError):
            error = UnsupportedCodec(
                f"record batch {where} is compressed with {codec}, which this install cannot "
                f"decode ({exc}); install cramjam (snappy, lz4, zstd), then `raylane dlq replay` "
                "re-publishes the batch's records"
            )
        else:
            error = CorruptBatch(
                f"record batch {where} cannot be read from offset {start} on: "
                f"{type(exc).__name__}: {exc}"
                + ("" if found is not None else " (batch bounds not found: skipping one offset)")
            )
        self.skipped.append((tp, SkippedBatch(start, nxt, codec, error, body)))
        log.error(
            "%s[%d]@%d..%d: %s: %s; going on at %d",
            tp.topic,
            tp.partition,
            start,
            nxt - 1,
            error.error_class,
            error.message,
            nxt,
        )
        return nxt


def describe_batch(
    raw: bytes | None, span: tuple[int, int | None] | None, start: int, *, trust_header: bool
) -> tuple[int, str, bytes] | None:
    """(next offset, codec, bytes) of the batch at byte span `span` of a fetched message set,
    which the consumer was reading from offset `start` on; None when its bounds are unknown.

    A batch whose CRC failed has an untrusted header (its last-offset delta is under the
    CRC): its end is then the next batch's base offset, or the header's only when that is
    consistent and no batch follows; a result never goes back to or before `start`.
    """
    if raw is None or span is None:
        return None
    pos, end = span
    if end is None:
        return None
    mv = memoryview(raw)
    if end > len(mv) or end - pos < 22:
        return None
    (base,) = struct.unpack_from(">q", mv, pos)
    magic = mv[pos + 16]
    following = struct.unpack_from(">q", mv, end)[0] if end + 8 <= len(mv) else None
    if magic >= 2:  # v2: ... magic(1) crc(4) attributes(2) lastOffsetDelta(4) ... count(4)
        if end - pos < 61:
            return None
        (attrs,) = struct.unpack_from(">h", mv, pos + 21)
        (delta,) = struct.unpack_from(">i", mv, pos + 23)
        (count,) = struct.unpack_from(">i", mv, pos + 57)
        nxt = base + delta + 1
        # as written by a producer: count = delta + 1 (compaction leaves gaps, but an
        # untrusted header is only believed in the common case; else one offset at a time)
        consistent = 0 <= delta < (1 << 24) and count == delta + 1
    else:  # v0/v1: a compressed wrapper's offset is its last inner record's
        attrs, nxt, consistent = mv[pos + 17], base + 1, True
    if not trust_header:
        if following is not None:
            if not start < nxt <= following:
                nxt = following
        elif not consistent:
            return None
    if nxt <= start:
        if following is None or following <= start:
            return None
        nxt = following
    return nxt, CODECS.get(attrs & 0x07, f"codec {attrs & 0x07}"), bytes(mv[pos:end])


@contextlib.contextmanager
def reading(q: Quarantine, *, fresh_budget: bool = True) -> Iterator[Quarantine]:
    """Put `q` in force for the ``getmany`` calls made in this block (this task only).

    With `fresh_budget`, what batches decompress in the block counts from zero; without,
    it adds to what earlier blocks decompressed (several fetches filling one batch).
    """
    install()
    if fresh_budget:
        q.used, q.later = 0, False
        if len(q.deferred) > 10_000:  # batches put off that were then read elsewhere
            q.deferred.clear()
    token = _ACTIVE.set(q)
    try:
        yield q
    finally:
        _ACTIVE.reset(token)


def parse(
    raw: bytes,
    topic: str,
    partition: int,
    start: int,
    q: Quarantine | None = None,
    *,
    fresh_budget: bool = True,
) -> tuple[list[Any], int]:
    """What aiokafka's fetcher makes of fetched bytes `raw` of one partition read from offset
    `start` (under `q` when given): its records, and the offset its position moves to. For
    a batch kept in a dead letter, and for tests that feed the parser bytes built by hand."""
    from aiokafka.consumer import fetcher
    from aiokafka.structs import TopicPartition

    install()
    parts = fetcher.PartitionRecords(
        TopicPartition(topic, partition), fetcher.MemoryRecords(raw), [], start, None, None, True, 0
    )
    if q is None:
        return list(parts), parts.next_fetch_offset
    with reading(q, fresh_budget=fresh_budget):
        return list(parts), parts.next_fetch_offset


# -- the hooks into aiokafka ------------------------------------------------------------------

_installed = False


def _capped(orig: Callable[[Any], bytes], gzip: bool) -> Callable[[Any], bytes]:
    def decode(payload: Any) -> bytes:
        q = _ACTIVE.get()
        if q is None:
            return orig(payload)
        # gzip: never past the per-batch limit, so a bomb is told apart whatever is used;
        # the other codecs have no bounded decoder here: checked after the fact
        out = bounded_gunzip(payload, q.max_decompressed_bytes) if gzip else orig(payload)
        q._admit(len(out))
        return out

    decode.__wrapped__ = orig  # type: ignore[attr-defined]
    return decode


def install() -> None:
    """Hook bounded decoding and batch skipping into aiokafka (once per process)."""
    global _installed
    if _installed:
        return
    import importlib

    from aiokafka.consumer import fetcher

    for name in (
        "aiokafka.record.default_records",
        "aiokafka.record.legacy_records",
        "aiokafka.record._crecords.default_records",
        "aiokafka.record._crecords.legacy_records",
    ):
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pure-Python install: no compiled records
            continue
        for codec in ("gzip", "snappy", "lz4", "zstd"):
            attr = f"{codec}_decode"
            if hasattr(mod, attr):
                setattr(mod, attr, _capped(getattr(mod, attr), codec == "gzip"))

    base = fetcher.MemoryRecords

    class KeptMemoryRecords(base):  # type: ignore[misc, valid-type]
        """aiokafka's message-set reader, keeping the raw bytes and the byte span of the
        batch it returned last, to find a bad batch by position (not by its header)."""

        def __init__(self, buffer: bytes) -> None:
            super().__init__(buffer)
            self.raw = buffer
            self.last: tuple[int, int | None] | None = None
            self._cursor = 0

        def next_batch(self, *args: Any) -> Any:
            pos = self._cursor  # batches are read in order, each 12 + length bytes
            end = None
            if pos + 12 <= len(self.raw):
                (length,) = struct.unpack_from(">i", self.raw, pos + 8)
                end = pos + 12 + length if length > 0 else None
            self.last = (pos, end)
            batch = super().next_batch(*args)
            if batch is not None and end is not None:
                self._cursor = end
            return batch

    fetcher.MemoryRecords = KeptMemoryRecords
    unpack = fetcher.PartitionRecords._unpack_records

    def _unpack_records(self: Any) -> Iterator[Any]:
        inner = unpack(self)
        while True:
            q = _ACTIVE.get()
            if q is not None:
                q.current = (self._tp.topic, self._tp.partition, self.next_fetch_offset)
            try:
                rec = next(inner)
            except StopIteration:
                return
            except MemoryError:
                raise
            except Exception as e:
                if q is None:
                    raise
                # end this fetch result: the consumer's position becomes next_fetch_offset
                # (aiokafka's: past the records returned and any control batches), and the
                # next fetch starts there, or past the batch when it is dead-lettered
                if isinstance(e, _Later):
                    return
                start = self.next_fetch_offset
                nxt = q._skip(self._tp, self._records, start, e)
                if nxt is not None:
                    self.next_fetch_offset = nxt
                return
            yield rec

    fetcher.PartitionRecords._unpack_records = _unpack_records
    _installed = True
