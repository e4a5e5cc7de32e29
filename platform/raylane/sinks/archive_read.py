"""Reading the event archive: its files by time range, one topic as a DataFrame, its status.

The layout is :mod:`raylane.sinks.archive`'s. Files hold at-least-once deliveries, so a
record may be in two files after a crash; :func:`read_archive` de-duplicates by
(partition, offset) and returns each record once, in (timestamp, partition, offset) order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from raylane.config import PipelineConfig
from raylane.settings import Settings
from raylane.sinks.archive import open_fs, topic_dir

__all__ = [
    "ArchiveTopicStatus",
    "TimeBound",
    "archive_files",
    "archive_root",
    "archive_status",
    "in_range",
    "read_archive",
]

#: A time bound: an aware datetime (a naive one is read as UTC), epoch milliseconds, or None.
TimeBound = datetime | int | float | None

_HOUR = re.compile(r"^hour=(\d{4}-\d{2}-\d{2}T\d{2})$")
_PART = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
_KEYS = ["_timestamp", "_partition", "_offset"]  # the sort order; (partition, offset) is unique


@dataclass(frozen=True)
class ArchiveTopicStatus:
    """What the archive holds of one topic (records counted per file, re-writes included)."""

    topic: str
    files: int
    records: int
    bytes: int
    first: datetime | None
    last: datetime | None


def archive_root(cfg: PipelineConfig, settings: Settings) -> str:
    """The pipeline's archive root: ``archive.path``, else ``$RAYLANE_HOME/archive``."""
    if cfg.archive is not None and cfg.archive.path:
        return cfg.archive.path
    return str(settings.home / "archive")


def _ms(bound: TimeBound) -> int | None:
    if bound is None:
        return None
    if isinstance(bound, datetime):
        aware = bound if bound.tzinfo is not None else bound.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    return int(bound)


def _hour_start_ms(hour: str) -> int:
    return int(datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp() * 1000)


def _names(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    try:
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return []


def _located(
    root: str, topic: str, start: TimeBound, end: TimeBound, storage_options: Any
) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, base = open_fs(root, storage_options)
    lo, hi = _ms(start), _ms(end)
    hour_ms = int(timedelta(hours=1).total_seconds() * 1000)
    tdir = topic_dir(base, topic)
    found: list[tuple[str, int, int, str]] = []
    for name in _names(fs, tdir):
        m = _HOUR.match(name)
        if m is None:
            continue
        h0 = _hour_start_ms(m.group(1))
        if (hi is not None and h0 >= hi) or (lo is not None and h0 + hour_ms <= lo):
            continue
        for fname in _names(fs, f"{tdir}/{name}"):
            p = _PART.match(fname)
            if p is not None:  # hidden temporary names of a write in progress never match
                found.append(
                    (m.group(1), int(p.group(1)), int(p.group(2)), f"{tdir}/{name}/{fname}")
                )
    found.sort()
    return fs, [f for *_, f in found]


def _public(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else str(fs.unstrip_protocol(path))


def archive_files(
    root: str,
    topic: str,
    start: TimeBound = None,
    end: TimeBound = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """The archive files of `topic` whose hour overlaps [start, end), in (hour, partition,
    first offset) order: local paths for a local root, fsspec URLs otherwise."""
    fs, files = _located(root, topic, start, end, storage_options)
    return [_public(fs, f) for f in files]


def read_archive(
    root: str,
    topic: str,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    columns: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The archived records of `topic` with ``_timestamp`` in [start, end): each record once
    (de-duplicated by ``_partition``, ``_offset``), sorted by (_timestamp, _partition, _offset).

    `columns` picks columns (missing ones are left out); every column by default. Files
    written with other field sets are combined (missing fields are null).
    """
    fs, files = _located(root, topic, start, end, storage_options)
    want = list(columns) if columns is not None else None
    tables: list[pa.Table] = []
    for f in files:
        with fs.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            cols = None if want is None else [c for c in dict.fromkeys(_KEYS + want) if c in names]
            tables.append(pf.read(columns=cols))
    if not tables:
        return _empty(want)
    table = pa.concat_tables(tables, promote_options="permissive")
    df = table.to_pandas()
    df = df[in_range(df["_timestamp"], start, end)]
    df = df.drop_duplicates(subset=["_partition", "_offset"], keep="first")
    df = df.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    if want is not None:
        df = df[[c for c in want if c in df.columns]]
    return df


def in_range(ts: pd.Series, start: TimeBound = None, end: TimeBound = None) -> pd.Series:
    """The rows of timestamps `ts` (UTC) in [start, end), as a boolean mask."""
    lo, hi = _ms(start), _ms(end)
    keep = pd.Series(True, index=ts.index)
    if lo is not None:
        keep &= ts >= pd.Timestamp(lo, unit="ms", tz="UTC")
    if hi is not None:
        keep &= ts < pd.Timestamp(hi, unit="ms", tz="UTC")
    return keep


def _empty(columns: list[str] | None) -> pd.DataFrame:
    cols = columns if columns is not None else list(_EMPTY_TYPES)
    return pd.DataFrame({c: pd.Series(dtype=_EMPTY_TYPES.get(c, "object")) for c in cols})


_EMPTY_TYPES: dict[str, Any] = {
    "_topic": "object",
    "_partition": "int32",
    "_offset": "int64",
    "_timestamp": pd.DatetimeTZDtype(unit="ms", tz="UTC"),
    "_key": "object",
    "_headers": "object",
    "_value": "object",
    "_error": "object",
}


def archive_status(
    root: str, topics: Sequence[str], *, storage_options: dict[str, Any] | None = None
) -> list[ArchiveTopicStatus]:
    """Files, records, bytes and first/last record time per topic, from file footers only
    (cheap: no data is read). Records are counted per file, so re-written ones count twice."""
    out: list[ArchiveTopicStatus] = []
    for topic in topics:
        fs, files = _located(root, topic, None, None, storage_options)
        records = size = 0
        first: datetime | None = None
        last: datetime | None = None
        for f in files:
            size += int(fs.size(f) or 0)
            with fs.open(f, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            records += meta.num_rows
            lo, hi = _time_range(meta)
            if lo is not None:
                first = lo if first is None else min(first, lo)
            if hi is not None:
                last = hi if last is None else max(last, hi)
        out.append(ArchiveTopicStatus(topic, len(files), records, size, first, last))
    return out


def _time_range(meta: pq.FileMetaData) -> tuple[datetime | None, datetime | None]:
    """Min and max ``_timestamp`` from the row groups' statistics."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if "_timestamp" not in names:
        return None, None
    col = names.index("_timestamp")
    lo: datetime | None = None
    hi: datetime | None = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            continue
        a, b = _as_dt(st.min), _as_dt(st.max)
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return lo, hi


def _as_dt(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v.astimezone(UTC) if v.tzinfo is not None else v.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(v) / 1000, tz=UTC)
