"""The event archive's layout and writer: consumed Kafka records to Parquet through fsspec.

Layout (the SDK, notebooks and :mod:`raylane.sinks.archive_read` read exactly this)::

    {root}/topic={topic}/hour={YYYY-MM-DDTHH}/part-{partition}-{first_offset}-{last_offset}.parquet

The hour is the record's Kafka timestamp in UTC. :class:`ArchiveSink` writes one file per
(topic, partition, hour) per :meth:`~ArchiveSink.write` (more when a group exceeds the file
limits), zstd-compressed, and makes it visible in one step: a local file is written under a
hidden temporary name, fsynced and renamed; an object store (S3, GCS, ...) gets a single PUT,
which is visible only once complete. A reader never sees half a file.

Columns: :data:`META_COLUMNS` (the record's coordinates, key, headers, original value bytes
and ``_error``, why the value could not be decoded), then the decoded record's top-level
fields; a dict or list field (an Avro map, record or array) is a JSON string column, as is a
column whose values pyarrow cannot put in one type. A field named like a meta column is
stored with a trailing underscore (``_offset_``).

Delivery is at-least-once: the caller commits offsets only after :meth:`ArchiveSink.write`
returns, so after a crash records are written again (perhaps into files with other
boundaries); readers de-duplicate by (topic, partition, offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from raylane.errors import ConfigError, ContractError, DependencyError
from raylane.kafka.records import InRecord

__all__ = [
    "META_COLUMNS",
    "ArchiveSink",
    "Decoded",
    "Decoder",
    "WrittenFile",
    "archive_storage_options",
    "contract_decoder",
    "hour_of",
    "json_decoder",
    "open_fs",
    "part_name",
    "topic_dir",
]

log = logging.getLogger("raylane.sinks")

#: The columns every archive file starts with, and their types.
META_COLUMNS: dict[str, pa.DataType] = {
    "_topic": pa.string(),
    "_partition": pa.int32(),
    "_offset": pa.int64(),
    "_timestamp": pa.timestamp("ms", tz="UTC"),
    "_key": pa.binary(),
    "_headers": pa.string(),
    "_value": pa.binary(),
    "_error": pa.string(),
}

#: A decoded value: (its top-level fields or None, why it could not be decoded or None).
Decoded = tuple[Mapping[str, Any] | None, str | None]
#: Decodes one record value (None: a tombstone).
Decoder = Callable[[bytes | None], Decoded]


def json_decoder(value: bytes | None) -> Decoded:
    """Decode a value without a contract: a JSON object's fields, else nothing (kept raw)."""
    if not value or value.lstrip()[:1] != b"{":
        return None, None
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return None, None
    return (obj, None) if isinstance(obj, dict) else (None, None)


def contract_decoder(contract: str, registry: Any = None) -> Decoder:
    """Decode values with a contract's codec (Confluent Avro or JSON); errors become ``_error``.

    Raises ConfigError when the contract is not registered.
    """
    from raylane.contracts import Codec

    try:
        codec = Codec.for_contract(contract, registry, formats=("avro", "json"))
    except Exception as e:
        raise ConfigError(
            f"archive contract {contract!r} cannot be loaded ({type(e).__name__}: {e}); "
            "register it (`raylane schema register`) or drop `contract` to keep values raw",
            stage="archive",
        ) from e

    def decode(value: bytes | None) -> Decoded:
        try:
            return codec.decode(value), None
        except ContractError as e:
            return None, f"{e.error_class}: {e.message}"

    return decode


def hour_of(timestamp_ms: int) -> str:
    """The ``hour=`` partition value of a Kafka timestamp: ``YYYY-MM-DDTHH`` in UTC."""
    return datetime.fromtimestamp(max(0, timestamp_ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H")


def topic_dir(root: str, topic: str) -> str:
    """The folder of one topic under the archive root."""
    return f"{root.rstrip('/')}/topic={topic}"


def part_name(partition: int, first_offset: int, last_offset: int) -> str:
    """A file's name: ``part-{partition}-{first_offset}-{last_offset}.parquet``."""
    return f"part-{partition}-{first_offset}-{last_offset}.parquet"


def open_fs(
    root: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `root` (URL or local path) and the root path inside it."""
    try:
        fs, path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
    except (ImportError, ValueError) as e:  # an unknown protocol, a missing s3fs/gcsfs
        raise ConfigError(
            f"archive path {root!r} cannot be opened with fsspec: {e}", stage="archive"
        ) from e
    return fs, str(path).rstrip("/") or "/"


def archive_storage_options(env_var: str | None) -> dict[str, Any]:
    """fsspec storage options from the JSON object in environment variable `env_var`."""
    if not env_var:
        return {}
    raw = os.environ.get(env_var)
    if raw is None:
        raise ConfigError(
            f"archive.storage_options_env names {env_var}, which is not set; export it as a "
            'JSON object of fsspec storage options (e.g. {"key": ..., "secret": ...})',
            stage="archive",
        )
    try:
        opts = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{env_var} is not valid JSON: {e}", stage="archive") from e
    if not isinstance(opts, dict):
        raise ConfigError(f"{env_var} must hold a JSON object, not {type(opts).__name__}")
    return opts


@dataclass(frozen=True)
class WrittenFile:
    """One archive file written by :meth:`ArchiveSink.write`."""

    path: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    records: int
    bytes: int


class ArchiveSink:
    """Writes consumed records to the archive layout; ``write`` returns once they are durable.

    Unlike the Kafka sink's output records, its records are consumed ones
    (:class:`~raylane.kafka.records.InRecord`): their coordinates are the archive's columns.
    """

    def __init__(
        self,
        root: str,
        decoders: Mapping[str, Decoder] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        max_file_records: int = 50_000,
        max_file_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.root_url = root
        self.fs, self.root = open_fs(root, storage_options)
        self.decoders: dict[str, Decoder] = dict(decoders or {})
        self.max_file_records = max_file_records
        self.max_file_bytes = max_file_bytes
        self._local = isinstance(self.fs, LocalFileSystem)

    async def start(self) -> None:
        """Nothing to open: each write opens its own files."""

    async def close(self) -> None:
        """Nothing to release: each write closes its own files."""

    async def write(self, records: Sequence[InRecord]) -> list[WrittenFile]:
        """Write `records` (in a worker thread); returns the files once all are durable.

        Raises a retriable DependencyError when the storage fails: write them again.
        """
        if not records:
            return []
        return await asyncio.to_thread(self.write_sync, records)

    def write_sync(self, records: Sequence[InRecord]) -> list[WrittenFile]:
        """:meth:`write` in the calling thread."""
        groups: dict[tuple[str, int, str], list[InRecord]] = {}
        for r in records:
            groups.setdefault((r.topic, r.partition, hour_of(r.timestamp_ms)), []).append(r)
        written: list[WrittenFile] = []
        for (topic, partition, hour), group in sorted(groups.items()):
            group.sort(key=lambda r: r.offset)
            for chunk in self._chunks(group):
                written.append(self._write_file(topic, partition, hour, chunk))
        return written

    def _chunks(self, group: list[InRecord]) -> list[list[InRecord]]:
        chunks: list[list[InRecord]] = [[]]
        size = 0
        for r in group:
            n = len(r.value or b"")
            cur = chunks[-1]
            if cur and (len(cur) >= self.max_file_records or size + n > self.max_file_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(r)
            size += n
        return chunks

    def _write_file(
        self, topic: str, partition: int, hour: str, chunk: list[InRecord]
    ) -> WrittenFile:
        first, last = chunk[0].offset, chunk[-1].offset
        folder = f"{topic_dir(self.root, topic)}/hour={hour}"
        path = f"{folder}/{part_name(partition, first, last)}"
        buf = io.BytesIO()
        pq.write_table(self.table(chunk), buf, compression="zstd")
        data = buf.getvalue()
        try:
            self._put(folder, path, data)
        except OSError as e:
            raise DependencyError(
                f"writing archive file {path} failed: {type(e).__name__}: {e}; the records are "
                "written again",
                stage="archive",
            ) from e
        return WrittenFile(path, topic, partition, first, last, len(chunk), len(data))

    def _put(self, folder: str, path: str, data: bytes) -> None:
        """Make `path` appear with `data` in one step (rename locally, one PUT elsewhere)."""
        if not self._local:
            self.fs.pipe_file(path, data)  # an object appears only once its upload completes
            return
        os.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)

    def table(self, chunk: Sequence[InRecord]) -> pa.Table:
        """The Arrow table of one file: meta columns, then the decoded fields."""
        decode = self.decoders.get(chunk[0].topic, json_decoder) if chunk else json_decoder
        fields: list[Mapping[str, Any] | None] = []
        errors: list[str | None] = []
        for r in chunk:
            rec, err = decode(r.value)
            fields.append(rec)
            errors.append(err)
        cols: dict[str, pa.Array] = {
            "_topic": pa.array([r.topic for r in chunk], pa.string()),
            "_partition": pa.array([r.partition for r in chunk], pa.int32()),
            "_offset": pa.array([r.offset for r in chunk], pa.int64()),
            "_timestamp": pa.array([r.timestamp_ms for r in chunk], pa.timestamp("ms", tz="UTC")),
            "_key": pa.array([r.key for r in chunk], pa.binary()),
            "_headers": pa.array([_headers_json(r.headers) for r in chunk], pa.string()),
            "_value": pa.array([r.value for r in chunk], pa.binary()),
            "_error": pa.array(errors, pa.string()),
        }
        names: dict[str, None] = {}
        for rec in fields:
            if rec:
                names.update(dict.fromkeys(rec))
        for name in names:
            col = name + "_" if name in META_COLUMNS else name
            cols[col] = _column([rec.get(name) if rec else None for rec in fields])
        return pa.table(cols)


def _headers_json(headers: Sequence[tuple[str, bytes | None]]) -> str:
    """Headers as a JSON object of name -> value (UTF-8, errors replaced; the last one wins)."""
    return json.dumps(
        {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in headers},
        ensure_ascii=False,
    )


def _column(values: list[Any]) -> pa.Array:
    """One field's column: dicts and lists (and values of no single Arrow type) as JSON."""
    if any(isinstance(v, dict | list | tuple) for v in values):
        return pa.array([_json(v) for v in values], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types, huge ints
        return pa.array([_json(v) for v in values], pa.string())


def _json(v: Any) -> str | None:
    if v is None:
        return None
    return json.dumps(v, default=_default, ensure_ascii=False)


def _default(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    return str(v)
