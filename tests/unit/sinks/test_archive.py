"""The archive's layout, writer and reader on local and in-memory filesystems (no services)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.errors import ConfigError
from raylane.kafka.records import InRecord
from raylane.settings import Settings
from raylane.sinks import SINK_TYPES
from raylane.sinks.archive import (
    META_COLUMNS,
    ArchiveSink,
    archive_storage_options,
    contract_decoder,
    hour_of,
)
from raylane.sinks.archive_read import archive_files, archive_root, archive_status, read_archive

T0 = int(datetime(2026, 3, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def _rec(
    offset: int,
    *,
    partition: int = 0,
    ts: int | None = None,
    value: bytes | None = None,
    topic: str = "t",
    headers: list[tuple[str, bytes]] | None = None,
) -> InRecord:
    if value is None:
        value = json.dumps({"n": offset, "who": f"u{offset}"}).encode()
    return InRecord(
        topic,
        partition,
        offset,
        f"k{offset}".encode(),
        value,
        headers if headers is not None else [("correlation_id", f"c{offset}".encode())],
        T0 + offset * MIN if ts is None else ts,
    )


def test_layout_names_topic_utc_hour_partition_and_offsets(tmp_path: Path) -> None:
    sink = ArchiveSink(str(tmp_path))
    recs = [_rec(o, ts=T0 + o * 20 * MIN) for o in range(5)]  # 10:00 .. 11:20 UTC
    written = sink.write_sync(recs)
    got = sorted(str(Path(w.path).relative_to(tmp_path)) for w in written)
    assert got == [
        "topic=t/hour=2026-03-01T10/part-0-0-2.parquet",
        "topic=t/hour=2026-03-01T11/part-0-3-4.parquet",
    ]
    assert hour_of(T0 - 1) == "2026-03-01T09"
    assert [w.records for w in sorted(written, key=lambda w: w.first_offset)] == [3, 2]
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []  # temporary names are renamed away


def test_file_columns_types_and_compression(tmp_path: Path) -> None:
    sink = ArchiveSink(str(tmp_path))
    (w,) = sink.write_sync([_rec(7, headers=[("a", b"x"), ("bad", b"\xff\xfe")])])
    pf = pq.ParquetFile(w.path)
    schema = pf.schema_arrow
    assert schema.names[: len(META_COLUMNS)] == list(META_COLUMNS)
    for name, typ in META_COLUMNS.items():
        assert schema.field(name).type == typ, name
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    row = pf.read().to_pylist()[0]
    assert (row["_topic"], row["_partition"], row["_offset"]) == ("t", 0, 7)
    assert row["_key"] == b"k7" and row["_error"] is None
    assert json.loads(row["_headers"]) == {"a": "x", "bad": "\ufffd\ufffd"}
    assert json.loads(row["_value"]) == {"n": 7, "who": "u7"}
    assert (row["n"], row["who"]) == (7, "u7")


def test_rewritten_records_are_read_once(tmp_path: Path) -> None:
    sink = ArchiveSink(str(tmp_path))
    recs = [_rec(o, partition=o % 2) for o in range(20)]
    sink.write_sync(recs[:12])
    sink.write_sync(recs[8:])  # a crash after writing 8..11, before their commit
    raw = sum(pq.ParquetFile(f).metadata.num_rows for f in archive_files(str(tmp_path), "t"))
    assert raw == 24
    df = read_archive(str(tmp_path), "t")
    assert len(df) == 20
    assert sorted(zip(df["_partition"], df["_offset"], strict=True)) == sorted(
        (o % 2, o) for o in range(20)
    )
    keys = list(zip(df["_timestamp"], df["_partition"], df["_offset"], strict=True))
    assert keys == sorted(keys)


def test_time_range_filters_records_and_files(tmp_path: Path) -> None:
    root = str(tmp_path)
    ArchiveSink(root).write_sync([_rec(o, ts=T0 + o * 15 * MIN) for o in range(12)])  # 3 hours
    start = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    end_ms = T0 + 2 * 60 * MIN  # 12:00, exclusive
    df = read_archive(root, "t", start, end_ms)
    assert list(df["_offset"]) == [2, 3, 4, 5, 6, 7]
    assert df["_timestamp"].min() == pd.Timestamp(start)
    hours = {Path(f).parent.name for f in archive_files(root, "t", start, end_ms)}
    assert hours == {"hour=2026-03-01T10", "hour=2026-03-01T11"}
    naive = datetime(2026, 3, 1, 12, 0)  # read as UTC
    assert list(read_archive(root, "t", naive)["_offset"]) == [8, 9, 10, 11]
    assert read_archive(root, "t", end_ms, end_ms).empty
    assert len(archive_files(root, "t")) == 3


def test_nested_values_are_json_columns(tmp_path: Path) -> None:
    value = json.dumps({"m": {"a": 1.5}, "xs": [1, 2], "s": "x"}).encode()
    (w,) = ArchiveSink(str(tmp_path)).write_sync([_rec(0, value=value)])
    row = pq.read_table(w.path).to_pylist()[0]
    assert json.loads(row["m"]) == {"a": 1.5} and json.loads(row["xs"]) == [1, 2]
    assert row["s"] == "x"


def test_a_field_of_mixed_types_falls_back_to_json(tmp_path: Path) -> None:
    vals = [json.dumps({"v": v}).encode() for v in (1, "one")]
    ArchiveSink(str(tmp_path)).write_sync([_rec(i, value=v) for i, v in enumerate(vals)])
    assert list(read_archive(str(tmp_path), "t")["v"]) == ["1", '"one"']


def test_a_field_named_like_a_meta_column_gets_a_trailing_underscore(tmp_path: Path) -> None:
    ArchiveSink(str(tmp_path)).write_sync([_rec(3, value=b'{"_offset": "mine"}')])
    df = read_archive(str(tmp_path), "t")
    assert df.loc[0, "_offset"] == 3 and df.loc[0, "_offset_"] == "mine"


def test_contract_values_decode_and_undecodable_ones_keep_their_bytes(tmp_path: Path) -> None:
    codec = Codec.for_contract("payments.scored")
    scored = {
        "event_id": "e1",
        "correlation_id": "c1",
        "pipeline": "fraud",
        "user_id": "u1",
        "merchant_id": "m1",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": T0,
        "score": 0.9,
        "decision": "flagged",
        "rule": "high_risk",
        "model_name": "fraud",
        "model_version": "3",
        "features": {"amount": 12.5, "risk_score": None},
        "latency_ms": {"score": 1.0},
        "scored_at": T0 + 5,
    }
    good, garbage = codec.encode(scored), b"\x07not avro"
    sink = ArchiveSink(str(tmp_path), {"t": contract_decoder("payments.scored")})
    sink.write_sync([_rec(0, value=good), _rec(1, value=garbage)])
    sink.write_sync([InRecord("t", 0, 2, None, None, [], T0)])  # a tombstone
    df = read_archive(str(tmp_path), "t")
    ok, bad, tomb = (df[df["_offset"] == o].iloc[0] for o in (0, 1, 2))
    assert ok["_error"] is None and ok["score"] == 0.9 and ok["event_time"] == T0
    assert json.loads(ok["features"]) == {"amount": 12.5, "risk_score": None}
    assert bad["_value"] == garbage and bad["_error"].startswith("BadMagicByte: ")
    assert pd.isna(bad["score"])
    assert tomb["_error"].startswith("EmptyEvent: ") and tomb["_value"] is None
    assert tomb["_key"] is None


def test_unknown_contract_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no\.such\.contract"):
        contract_decoder("no.such.contract")


def test_values_without_a_contract_that_are_not_json_objects_are_kept_raw(tmp_path: Path) -> None:
    vals = [b"\x00\x01binary", b"[1, 2]", b"{broken", b'{"ok": true}']
    ArchiveSink(str(tmp_path)).write_sync([_rec(i, value=v) for i, v in enumerate(vals)])
    df = read_archive(str(tmp_path), "t")
    assert list(df["_value"]) == vals
    assert df["_error"].isna().all()
    assert [v if v is True else None for v in df["ok"]] == [None, None, None, True]


def test_file_limits_split_a_group(tmp_path: Path) -> None:
    root = str(tmp_path)
    recs = [_rec(o, ts=T0, value=b"x" * 100) for o in range(10)]
    by_count = ArchiveSink(root, max_file_records=4).write_sync(recs)
    assert [(w.first_offset, w.last_offset) for w in by_count] == [(0, 3), (4, 7), (8, 9)]
    by_size = ArchiveSink(root + "/b", max_file_bytes=250).write_sync(recs)
    assert [w.records for w in by_size] == [2, 2, 2, 2, 2]


def test_columns_pick_and_skip_missing_ones(tmp_path: Path) -> None:
    ArchiveSink(str(tmp_path)).write_sync([_rec(o) for o in range(3)])
    df = read_archive(str(tmp_path), "t", columns=["n", "nope"])
    assert list(df.columns) == ["n"] and list(df["n"]) == [0, 1, 2]


def test_files_with_different_fields_combine(tmp_path: Path) -> None:
    sink = ArchiveSink(str(tmp_path))
    sink.write_sync([_rec(0, value=b'{"a": 1}')])
    sink.write_sync([_rec(1, value=b'{"b": "x"}')])
    df = read_archive(str(tmp_path), "t")
    assert df["a"].tolist()[0] == 1 and pd.isna(df["a"].tolist()[1])
    assert df["b"].tolist()[1] == "x"


def test_readers_ignore_temporary_and_foreign_files(tmp_path: Path) -> None:
    ArchiveSink(str(tmp_path)).write_sync([_rec(0)])
    hour = next((tmp_path / "topic=t").iterdir())
    (hour / ".part-0-1-1.parquet.abcd1234.tmp").write_bytes(b"half a file")
    (hour / "notes.txt").write_text("x")
    (tmp_path / "topic=t" / "hour=garbage").mkdir()
    assert len(archive_files(str(tmp_path), "t")) == 1
    assert len(read_archive(str(tmp_path), "t")) == 1


def test_empty_or_missing_topic_reads_as_an_empty_frame(tmp_path: Path) -> None:
    df = read_archive(str(tmp_path / "nothing"), "t")
    assert df.empty and list(df.columns) == list(META_COLUMNS)
    assert str(df["_timestamp"].dtype) == "datetime64[ms, UTC]"
    assert archive_files(str(tmp_path), "t") == []


def test_fsspec_urls_work_end_to_end() -> None:
    root = f"memory://archive-{uuid.uuid4().hex[:8]}"
    ArchiveSink(root).write_sync([_rec(o, partition=o % 2) for o in range(6)])
    files = archive_files(root, "t")
    assert files and all(f.startswith("memory://") for f in files)
    assert list(read_archive(root, "t")["_offset"]) == list(range(6))


def test_status_counts_files_records_bytes_and_times(tmp_path: Path) -> None:
    root = str(tmp_path)
    sink = ArchiveSink(root)
    sink.write_sync([_rec(o, ts=T0 + o * 30 * MIN) for o in range(4)])
    sink.write_sync([_rec(3, ts=T0 + 90 * MIN)])  # re-written: counted per file
    st, empty = archive_status(root, ["t", "other"])
    assert (st.topic, st.files, st.records) == ("t", 3, 5)
    assert st.bytes == sum(Path(f).stat().st_size for f in archive_files(root, "t"))
    assert st.first == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert st.last == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert (empty.files, empty.records, empty.first, empty.last) == (0, 0, None, None)


def test_storage_options_come_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert archive_storage_options(None) == {}
    monkeypatch.setenv("ARCH_OPTS", '{"key": "k", "secret": "s"}')
    assert archive_storage_options("ARCH_OPTS") == {"key": "k", "secret": "s"}
    monkeypatch.setenv("ARCH_OPTS", "[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        archive_storage_options("ARCH_OPTS")
    monkeypatch.delenv("ARCH_OPTS")
    with pytest.raises(ConfigError, match="ARCH_OPTS, which is not set"):
        archive_storage_options("ARCH_OPTS")


def test_archive_root_defaults_under_raylane_home(tmp_path: Path) -> None:
    settings = Settings("b:9092", "redis://x", "http://m", tmp_path)
    doc = yaml.safe_load((Path(__file__).parents[3] / "serve_configs/fraud.yaml").read_text())
    args = doc["applications"][0]["args"]
    args.pop("archive", None)
    assert archive_root(PipelineConfig.from_args(args), settings) == str(tmp_path / "archive")
    args["archive"] = {"topics": ["payments.scored"], "path": "s3://bucket/arch"}
    assert archive_root(PipelineConfig.from_args(args), settings) == "s3://bucket/arch"


def test_archive_sink_is_in_the_sink_table() -> None:
    assert SINK_TYPES["archive"] is ArchiveSink
