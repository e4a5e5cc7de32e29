"""Record batches a consumer cannot read: bounded decompression and going past them.

aiokafka decompresses a whole record batch in memory with no limit, and raises from
``getmany`` on a batch it cannot read (a CRC that fails, a codec it lacks, a record that
does not parse), again on every fetch: one crafted batch stops a partition for good, and a
compression bomb can exhaust a replica's memory, then the restarted replica's.

:func:`reading` puts a :class:`Quarantine` in force for the ``getmany`` calls made inside
it (a context variable, so other consumers in the process keep aiokafka's behaviour):

- gzip batches are inflated with ``zlib`` up to ``max_decompressed_bytes`` and no further;
  other codecs (which aiokafka decodes only with ``cramjam`` installed) are checked after
  decoding;
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
    "install",
    "locate_batch",
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


def bounded_gunzip(payload: Any, limit: int) -> bytes:
    """Inflate a gzip payload (one or more members), never producing more than `limit` bytes.

    Raises :class:`_TooLarge` at the limit and ``zlib.error``/``EOFError`` on a stream that
    is corrupt or cut short, as ``gzip`` would.
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
        data = d.unused_data
        if not data.strip(b"\0"):  # trailing padding, as gzip.GzipFile allows
            break
    return b"".join(out)


@dataclass
class Quarantine:
    """What one consumer does with batches it cannot read; see the module docstring."""

    max_decompressed_bytes: int
    skipped: list[tuple[Any, SkippedBatch]] = field(default_factory=list)
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

    def _skip(self, tp: Any, raw: bytes | None, start: int, exc: BaseException) -> int | None:
        """The offset to go on from after the batch holding `start` failed with `exc`, or
        None to end this fetch result at `start` and read the batch again."""
        where = locate_batch(raw, start) if raw is not None else None
        first, nxt, codec, body = where if where is not None else (start, start + 1, "?", b"")
        error: RaylaneError
        if isinstance(exc, _TooLarge):
            error = DecompressedTooLarge(
                f"{codec} record batch at offsets {first}..{nxt - 1} decompresses to more than "
                f"input.max_decompressed_batch_bytes={exc.limit}; raise the limit if batches "
                "this large are expected"
            )
        elif type(exc).__name__ == "UnsupportedCodecError":
            error = UnsupportedCodec(
                f"record batch at offsets {first}..{nxt - 1} is compressed with {codec}, which "
                f"this install cannot decode ({exc}); install cramjam for snappy, lz4 and zstd"
            )
        else:
            key = (tp.topic, tp.partition, start)
            if type(exc).__name__ == "CorruptRecordException" and key not in self._crc_once:
                if len(self._crc_once) > 10_000:  # wire faults that healed: forget them
                    self._crc_once.clear()
                self._crc_once.add(key)
                log.warning("%s[%d]@%d: %s; fetching it again", tp.topic, tp.partition, start, exc)
                return None
            self._crc_once.discard(key)
            error = CorruptBatch(
                f"record batch at offsets {first}..{nxt - 1} cannot be read from offset {start} "
                f"on: {type(exc).__name__}: {exc}"
                + ("" if where is not None else " (batch bounds not found: skipping one offset)")
            )
        first = max(first, start)  # records before `start` in this batch were returned
        self.skipped.append((tp, SkippedBatch(first, nxt, codec, error, body)))
        log.error(
            "%s[%d]@%d..%d: %s: %s; going on at %d",
            tp.topic,
            tp.partition,
            first,
            nxt - 1,
            error.error_class,
            error.message,
            nxt,
        )
        return nxt


def locate_batch(raw: bytes | None, offset: int) -> tuple[int, int, str, bytes] | None:
    """(base offset, next offset, codec, bytes) of the first whole batch in a fetched
    message set that ends after `offset`, read from the batch headers alone."""
    if raw is None:
        return None
    mv = memoryview(raw)
    pos = 0
    while pos + 22 <= len(mv):
        base, length = struct.unpack_from(">qi", mv, pos)
        end = pos + 12 + length
        if length < 10 or end > len(mv):
            return None
        magic = mv[pos + 16]
        if magic == 2:  # v2: ... magic(1) crc(4) attributes(2) lastOffsetDelta(4)
            if pos + 27 > end:
                return None
            (attrs,) = struct.unpack_from(">h", mv, pos + 21)
            (last_delta,) = struct.unpack_from(">i", mv, pos + 23)
            nxt = base + last_delta + 1
        else:  # v0/v1: a compressed wrapper's offset is its last inner record's
            attrs, nxt = mv[pos + 17], base + 1
        if nxt > offset:
            return base, nxt, CODECS.get(attrs & 0x07, f"codec {attrs & 0x07}"), bytes(mv[pos:end])
        pos = end
    return None


@contextlib.contextmanager
def reading(q: Quarantine) -> Iterator[Quarantine]:
    """Put `q` in force for the ``getmany`` calls made in this block (this task only)."""
    install()
    token = _ACTIVE.set(q)
    try:
        yield q
    finally:
        _ACTIVE.reset(token)


# -- the hooks into aiokafka ------------------------------------------------------------------

_installed = False


def _capped(orig: Callable[[Any], bytes], gzip: bool) -> Callable[[Any], bytes]:
    def decode(payload: Any) -> bytes:
        q = _ACTIVE.get()
        if q is None:
            return orig(payload)
        limit = q.max_decompressed_bytes
        if gzip:
            return bounded_gunzip(payload, limit)
        out = orig(payload)  # no bounded decoder for this codec: checked after the fact
        if len(out) > limit:
            raise _TooLarge(limit)
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
        """aiokafka's message-set reader, keeping the raw bytes to find a bad batch in."""

        def __init__(self, buffer: bytes) -> None:
            super().__init__(buffer)
            self.raw = buffer

    fetcher.MemoryRecords = KeptMemoryRecords
    unpack = fetcher.PartitionRecords._unpack_records

    def _unpack_records(self: Any) -> Iterator[Any]:
        q = _ACTIVE.get()
        inner = unpack(self)
        if q is None:
            yield from inner
            return
        while True:
            start = self.next_fetch_offset
            try:
                rec = next(inner)
            except StopIteration:
                return
            except MemoryError:
                raise
            except Exception as e:
                nxt = q._skip(self._tp, getattr(self._records, "raw", None), start, e)
                # end this fetch result: the consumer's position becomes next_fetch_offset,
                # the next fetch starts there (past the batch, or at it again for a CRC retry)
                self.next_fetch_offset = start if nxt is None else nxt
                return
            yield rec

    fetcher.PartitionRecords._unpack_records = _unpack_records
    _installed = True
