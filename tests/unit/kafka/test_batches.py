"""Bounded decompression and going past unreadable record batches, on aiokafka's own
fetch-side parser fed with batch bytes built here (the broker is in the integration test)."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from raylane.config import PipelineConfig
from raylane.errors import ConfigError
from raylane.kafka import batches
from raylane.kafka import deadletters as D
from raylane.kafka.records import header
from raylane.testing.kafka import record_batch

TP = TopicPartition("t", 0)


def _batch(values: list[bytes], *, base: int = 0, codec: int = 0, headers: Any = ()) -> bytes:
    return record_batch(values, base=base, codec=codec, headers=headers)


def _recodec(raw: bytes, codec: int) -> bytes:
    """The batch with its codec bits set to `codec` and a CRC that matches."""
    out = bytearray(raw)
    (attrs,) = struct.unpack_from(">h", out, 21)
    struct.pack_into(">h", out, 21, (attrs & ~7) | codec)
    struct.pack_into(">I", out, 17, calc_crc32c(bytes(out[21:])))
    return bytes(out)


def _read(raw: bytes, q: batches.Quarantine | None, start: int = 0) -> tuple[list[Any], int]:
    """What one fetch result of `raw` yields, and where the consumer's position goes."""
    recs, pos = batches.parse(raw, TP.topic, TP.partition, start, q)
    return [(r.offset, r.value) for r in recs], pos


# -- bounded gunzip -------------------------------------------------------------------------


def test_gunzip_returns_what_fits_and_stops_at_the_limit() -> None:
    data = b"0123456789" * 1000
    assert batches.bounded_gunzip(gzip.compress(data), len(data)) == data
    with pytest.raises(batches._TooLarge):
        batches.bounded_gunzip(gzip.compress(data), len(data) - 1)


def test_gunzip_never_inflates_a_bomb_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KB
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(batches._TooLarge):
            batches.bounded_gunzip(bomb, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes while refusing a 64 MiB bomb at 1 MiB"


def test_gunzip_reads_every_member_and_rejects_a_cut_stream() -> None:
    two = gzip.compress(b"a" * 100) + gzip.compress(b"b" * 100)
    assert batches.bounded_gunzip(two, 200) == b"a" * 100 + b"b" * 100
    padded = gzip.compress(b"a") + b"\0\0" + gzip.compress(b"b") + b"\0"
    assert batches.bounded_gunzip(padded, 10) == gzip.GzipFile(fileobj=io.BytesIO(padded)).read()
    with pytest.raises(batches._TooLarge):  # the limit counts both members
        batches.bounded_gunzip(two, 150)
    assert batches.bounded_gunzip(gzip.compress(b"x") + b"\0\0\0", 10) == b"x"
    with pytest.raises(EOFError):
        batches.bounded_gunzip(gzip.compress(b"y" * 1000)[:-12], 10_000)
    with pytest.raises(zlib.error):
        batches.bounded_gunzip(b"\x1f\x8b" + b"not gzip at all", 100)


# -- batch bounds ---------------------------------------------------------------------------


def test_describe_reads_the_batch_at_its_byte_span() -> None:
    a, b = _batch([b"1", b"2", b"3"], base=10), _batch([b"4", b"5"], base=13, codec=1)
    raw = a + b
    assert batches.describe_batch(raw, (0, len(a)), 10, trust_header=True) == (13, "none", a)
    assert batches.describe_batch(raw, (0, len(a)), 12, trust_header=True) == (13, "none", a)
    assert batches.describe_batch(raw, (len(a), len(raw)), 13, trust_header=True) == (
        15,
        "gzip",
        b,
    )
    assert batches.describe_batch(raw, (len(a), len(raw) + 5), 13, trust_header=True) is None
    assert batches.describe_batch(raw, (0, None), 10, trust_header=True) is None
    assert batches.describe_batch(None, (0, 10), 0, trust_header=True) is None


def _delta(raw: bytes, delta: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(">i", out, 23, delta)  # under the CRC, which now fails
    return bytes(out)


def test_an_untrusted_header_ends_at_the_next_batch() -> None:
    bad, good = _batch([b"x"] * 10, base=10), _batch([b"y"] * 10, base=20)
    for delta in (-5, 1_000_000):  # a delta that would go back, or far past the next batch
        raw = _delta(bad, delta) + good
        assert batches.describe_batch(raw, (0, len(bad)), 10, trust_header=False)[0] == 20
    # no batch after it: the header's end is used only when it is consistent
    assert batches.describe_batch(bad, (0, len(bad)), 10, trust_header=False)[0] == 20
    assert (
        batches.describe_batch(_delta(bad, 1_000_000), (0, len(bad)), 10, trust_header=False)
        is None
    )


# -- the quarantine on aiokafka's parser -----------------------------------------------------


def test_a_bomb_is_gone_past_and_the_records_around_it_are_returned() -> None:
    raw = (
        _batch([b"a", b"b"], base=0)
        + _batch([b"\0" * (8 << 20)], base=2, codec=1)
        + _batch([b"c"], base=3)
    )
    q = batches.Quarantine(1 << 20)
    got, pos = _read(raw, q)
    assert got == [(0, b"a"), (1, b"b")] and pos == 3  # the fetch result ends at the bomb
    (stand_in,) = q.take()
    assert stand_in.offset == 2 and stand_in.skipped is not None
    skipped = stand_in.skipped
    assert (skipped.first_offset, skipped.next_offset, skipped.codec) == (2, 3, "gzip")
    assert skipped.error.error_class == "DecompressedTooLarge"
    assert "input.max_decompressed_batch_bytes=1048576" in skipped.error.message
    assert stand_in.value == raw[len(_batch([b"a", b"b"])) : -len(_batch([b"c"], base=3))]
    assert q.take() == []
    got, pos = _read(_batch([b"c"], base=3), q, start=3)  # the next fetch starts past it
    assert got == [(3, b"c")] and pos == 4


def test_without_a_quarantine_aiokafka_behaves_as_before() -> None:
    raw = _batch([b"x" * 5000], codec=1)
    assert _read(raw, None) == ([(0, b"x" * 5000)], 1)
    with pytest.raises(UnsupportedCodecError):
        _read(_recodec(_batch([b"y"]), 3), None)


def test_an_unsupported_codec_is_dead_lettered_with_the_fix() -> None:
    q = batches.Quarantine(1 << 20)
    got, pos = _read(_recodec(_batch([b"y", b"z"], base=5), 3), q, start=5)
    assert got == [] and pos == 7
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "UnsupportedCodec"
    assert "lz4" in s.skipped.error.message and "cramjam" in s.skipped.error.message


def test_a_crc_failure_is_fetched_again_once_then_dead_lettered() -> None:
    bad = bytearray(_batch([b"p" * 50], base=4))
    bad[-5] ^= 0xFF  # in a record: the CRC fails, the header is intact
    with pytest.raises(CorruptRecordException):
        _read(bytes(bad), None, start=4)
    q = batches.Quarantine(1 << 20)
    assert _read(bytes(bad), q, start=4) == ([], 4)  # first time: read it again
    assert q.take() == []
    assert _read(bytes(bad), q, start=4) == ([], 5)  # the same failure again: past it
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "CorruptBatch"
    assert s.skipped.raw == bytes(bad)


def test_a_record_that_does_not_parse_loses_only_the_rest_of_its_batch() -> None:
    # aiokafka decodes header names as UTF-8 while parsing: a non-UTF-8 name raises there
    good = _batch([b"g1"], base=0)
    raw_broken = bytearray(_batch([b"h1", b"h2"], base=1, headers=[("nX", b"v")]))
    i = raw_broken.find(b"nX")
    raw_broken[i + 1] = 0xFF  # the name's second byte: not UTF-8, and the CRC made to match
    struct.pack_into(">I", raw_broken, 17, calc_crc32c(bytes(raw_broken[21:])))
    q = batches.Quarantine(1 << 20)
    got, pos = _read(good + bytes(raw_broken) + _batch([b"g2"], base=3), q)
    assert got == [(0, b"g1")] and pos == 3
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "CorruptBatch"
    assert (s.skipped.first_offset, s.skipped.next_offset) == (1, 3)
    assert "UnicodeDecodeError" in s.skipped.error.message


def test_the_dead_letter_names_the_batch_and_replay_skips_it() -> None:
    from raylane.kafka.deadletters import DeadLetter, dlq_record

    q = batches.Quarantine(1 << 10)
    _read(_batch([b"\0" * 10_000], base=7, codec=1), q, start=7)
    (s,) = q.take()
    assert s.skipped is not None
    out = dlq_record(s, s.skipped.error, "cid", "t.dlq", generated=True, max_bytes=1 << 20)
    assert header(out.headers, D.H_BATCH) == b"7..7 gzip"
    assert header(out.headers, D.H_CLASS) == b"DecompressedTooLarge"
    assert header(out.headers, D.H_STAGE) == b"fetch"
    assert header(out.headers, D.H_OFFSET) == b"7"
    assert out.value == s.skipped.raw and out.key is None
    letter = DeadLetter(0, 0, out.key, out.value, out.headers)
    assert letter.is_batch


def test_the_batch_limit_cannot_be_below_the_event_limit() -> None:
    import copy
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3]
    args = copy.deepcopy(
        yaml.safe_load((root / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["input"]["max_decompressed_batch_bytes"] = 1000
    with pytest.raises(ConfigError) as e:
        PipelineConfig.from_args(args)
    assert "input" in str(e.value) and "raise max_decompressed_batch_bytes" in str(e.value)


def test_a_corrupt_header_cannot_make_the_consumer_skip_the_next_batch() -> None:
    bad = bytearray(_delta(_batch([b"x"] * 10, base=10), -5))
    raw = bytes(bad) + _batch([b"g"] * 10, base=20)
    q = batches.Quarantine(1 << 20)
    assert _read(raw, q, start=10) == ([], 10)  # CRC: read again first
    got, pos = _read(raw, q, start=10)
    assert got == [] and pos == 20
    (s,) = q.take()
    assert s.skipped is not None and (s.skipped.first_offset, s.skipped.next_offset) == (10, 20)
    assert s.skipped.raw == bytes(bad)
    got, pos = _read(raw[len(bad) :], q, start=20)
    assert [o for o, _ in got] == list(range(20, 30)) and pos == 30


def test_the_bad_batch_is_blamed_not_a_control_batch_before_it() -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    ctl = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=1,
        producer_id=7,
        producer_epoch=0,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    ctl.append(
        0, timestamp=None, key=b"\x00\x00\x00\x01", value=b"\x00\x00\x00\x00\x00\x00", headers=[]
    )
    control = bytearray(ctl.build())
    struct.pack_into(">q", control, 0, 3)
    (attrs,) = struct.unpack_from(">h", control, 21)
    struct.pack_into(">h", control, 21, attrs | 0x20)  # the control flag
    struct.pack_into(">I", control, 17, calc_crc32c(bytes(control[21:])))
    lz4 = _recodec(_batch([b"c"], base=4), 3)
    q = batches.Quarantine(1 << 20)
    got, pos = _read(_batch([b"a", b"b", b"z"], base=0) + bytes(control) + lz4, q)
    assert [o for o, _ in got] == [0, 1, 2] and pos == 5
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "UnsupportedCodec"
    assert (s.skipped.first_offset, s.skipped.next_offset, s.skipped.codec) == (4, 5, "lz4")
    assert s.skipped.raw == lz4


def test_a_legacy_compressed_wrapper_names_all_its_offsets() -> None:
    from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    b = LegacyRecordBatchBuilder(magic=1, compression_type=1, batch_size=1 << 30)
    for i in range(3):
        b.append(i, timestamp=None, key=None, value=b"\0" * (1 << 20))
    raw = bytearray(b.build())
    struct.pack_into(">q", raw, 0, 12)  # a wrapper's offset is its last inner record's
    q = batches.Quarantine(1 << 20)
    got, pos = _read(bytes(raw), q, start=10)
    assert got == [] and pos == 13
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "DecompressedTooLarge"
    assert (s.skipped.first_offset, s.skipped.next_offset) == (10, 13)


def test_batches_that_fit_alone_but_not_together_wait_for_the_next_fetch() -> None:
    near = [_batch([b"\0" * (600 << 10)], base=i, codec=1) for i in range(3)]
    q = batches.Quarantine(1 << 20)
    tracemalloc.start()
    try:
        got, pos = _read(b"".join(near), q)
        assert [o for o, _ in got] == [0] and pos == 1  # the second would pass 1 MiB
        got, pos = _read(b"".join(near[1:]), q, start=1)
        assert [o for o, _ in got] == [1] and pos == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert q.take() == []  # nothing dead-lettered: each fits a fetch of its own
    assert peak < 3 << 20
    # several fetches filling one batch share one budget
    q2 = batches.Quarantine(1 << 20)
    got, _ = _read(near[0], q2)
    assert len(got) == 1
    assert batches.parse(near[1], TP.topic, TP.partition, 1, q2, fresh_budget=False) == ([], 1)


def test_a_batch_put_off_once_gets_in_and_a_bomb_is_never_put_off() -> None:
    near = _batch([b"\0" * (600 << 10)], base=5, codec=1)
    bomb = _batch([b"\0" * (8 << 20)], base=5, codec=1)

    def read(raw: bytes) -> tuple[list[Any], int]:
        recs, pos = batches.parse(raw, TP.topic, TP.partition, 5, q, fresh_budget=False)
        return [r.offset for r in recs], pos

    q = batches.Quarantine(1 << 20)
    q.used = 900 << 10  # other partitions' batches took most of this fetch's budget
    assert read(near) == ([], 5)  # put off
    assert q.later  # the ingress stops collecting: the budget is spent
    assert read(near) == ([5], 6)  # still spent, but it waited once: in
    q.used = 900 << 10
    assert read(bomb) == ([], 6)  # a bomb is dead-lettered, not put off
    (s,) = q.take()
    assert s.skipped is not None and s.skipped.error.error_class == "DecompressedTooLarge"


def test_replay_refuses_a_batch_it_still_cannot_read() -> None:
    from raylane.errors import RaylaneError
    from raylane.kafka.deadletters import DeadLetter
    from raylane.kafka.replay import batch_records

    good = _batch([b"r1", b"r2"], base=3, codec=1)
    crc = bytearray(good)
    crc[-3] ^= 0xFF

    def letter(raw: bytes) -> DeadLetter:
        hdrs = [(D.H_BATCH, b"3..4 gzip"), (D.H_TOPIC, b"t"), (D.H_PARTITION, b"0")]
        return DeadLetter(0, 9, None, raw, hdrs)

    assert [(r.offset, r.value) for r in batch_records(letter(good), 1 << 20)] == [
        (3, b"r1"),
        (4, b"r2"),
    ]
    for bad, limit in ((bytes(crc), 1 << 20), (b"", 1 << 20), (good, 1)):
        with pytest.raises(RaylaneError):
            batch_records(letter(bad), limit)
