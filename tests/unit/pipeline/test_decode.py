"""The decode stage: contract rejections and event-time limits become dead letters (no services)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.kafka import deadletters as D
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.pipeline.decode import DecodeStage

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_800_000_000_000


def _cfg(**inp: Any) -> PipelineConfig:
    args = copy.deepcopy(
        yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["input"].update(inp)
    return PipelineConfig.from_args(args)


def _event(i: int, event_time: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "user_id": "u1",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": 10.0 + i,
        "currency": "EUR",
        "user_history_hash": "h",
        "event_time": event_time,
        "device_id": None,
    }


def _records(codec: Codec, times: list[int], broker_ts: int = NOW) -> list[InRecord]:
    return [
        InRecord("t", 0, i, b"u1", codec.encode(_event(i, t)), [], broker_ts)
        for i, t in enumerate(times)
    ]


@pytest.mark.parametrize(
    ("skew_s", "age_s", "times", "rejected"),
    [
        (300.0, None, [NOW, NOW + 299_000, NOW + 301_000, 0], [2]),
        (None, None, [NOW + 10**9, 0], []),
        (300.0, 3600.0, [NOW - 3_599_000, NOW - 3_601_000, NOW + 400_000], [1, 2]),
    ],
)
def test_event_time_outside_the_window_around_the_broker_timestamp_is_dead_lettered(
    skew_s: float | None, age_s: float | None, times: list[int], rejected: list[int]
) -> None:
    cfg = _cfg(max_future_skew_s=skew_s, max_event_age_s=age_s)
    codec = Codec.for_contract("payments.initiated")
    records = _records(codec, times)
    dlq: list[OutRecord] = []
    out = DecodeStage(cfg, codec)(records, dlq)
    assert [r.offset for r in out.records] == [i for i in range(len(times)) if i not in rejected]
    assert [int(header(d.headers, D.H_OFFSET) or b"-1") for d in dlq] == rejected
    for d in dlq:
        assert header(d.headers, D.H_CLASS) == b"EventTimeOutOfRange"
        assert b"event_time" in (header(d.headers, D.H_MESSAGE) or b"")
        assert d.value == records[int(header(d.headers, D.H_OFFSET) or b"0")].value
        # the event's own correlation id travels with its dead letter
        assert (
            header(d.headers, D.H_CORRELATION)
            == f"c{int(header(d.headers, D.H_OFFSET) or 0)}".encode()
        )


def test_records_without_a_broker_timestamp_are_not_time_checked() -> None:
    codec = Codec.for_contract("payments.initiated")
    dlq: list[OutRecord] = []
    out = DecodeStage(_cfg(), codec)(_records(codec, [NOW + 10**9], broker_ts=0), dlq)
    assert len(out.events) == 1 and dlq == []


def test_input_limits_dead_letter_huge_keys_headers_and_strings() -> None:
    """A ~600 KB event_id, a huge key or header would make every output (which copies ids into
    body and headers) exceed the broker's limit: such records go to the DLQ, and the dead
    letter itself stays small (key cut, oversized headers dropped)."""
    cfg = _cfg(max_key_bytes=64, max_header_bytes=256, max_string_chars=100)
    codec = Codec.for_contract("payments.initiated")
    ok = _event(0, NOW)
    big_id = dict(_event(1, NOW), event_id="x" * 600_000)
    records = [
        InRecord("t", 0, 0, b"u1", codec.encode(ok), [], NOW),
        InRecord("t", 0, 1, b"k" * 5000, codec.encode(_event(2, NOW)), [], NOW),
        InRecord("t", 0, 2, b"u1", codec.encode(_event(3, NOW)), [("h", b"v" * 20_000)], NOW),
        InRecord("t", 0, 3, b"u1", codec.encode(big_id), [], NOW),
    ]
    dlq: list[OutRecord] = []
    out = DecodeStage(cfg, Codec.for_contract("payments.initiated", max_event_bytes=1 << 21))(
        records, dlq
    )
    assert [r.offset for r in out.records] == [0]
    by_offset = {int(header(d.headers, D.H_OFFSET) or b"-1"): d for d in dlq}
    assert sorted(by_offset) == [1, 2, 3]
    for d in dlq:
        assert header(d.headers, D.H_CLASS) == b"LimitExceeded"
    assert b"input.max_key_bytes=64" in (header(by_offset[1].headers, D.H_MESSAGE) or b"")
    assert by_offset[1].key is not None and len(by_offset[1].key) == D.DLQ_KEEP_KEY_BYTES
    assert header(by_offset[1].headers, D.H_KEY_TRUNCATED) == b"5000"
    assert b"input.max_header_bytes=256" in (header(by_offset[2].headers, D.H_MESSAGE) or b"")
    assert header(by_offset[2].headers, "h") is None  # the 20 KB header is not copied
    assert header(by_offset[2].headers, D.H_HEADERS_DROPPED) == b"1 headers, 20001 bytes"
    assert b"event_id: string of 600000 characters" in (
        header(by_offset[3].headers, D.H_MESSAGE) or b""
    )
    assert by_offset[3].value == records[3].value  # original bytes, within max_event_bytes
    assert sum(len(k) + len(v) for k, v in by_offset[3].headers) < 2048


def test_an_oversized_correlation_header_is_not_trusted() -> None:
    codec = Codec.for_contract("payments.initiated")
    ev = dict(_event(0, NOW), correlation_id=None)
    rec = InRecord("t", 0, 0, b"u1", codec.encode(ev), [("correlation_id", b"c" * 300)], NOW)
    dlq: list[OutRecord] = []
    out = DecodeStage(_cfg(), codec)([rec], dlq)
    assert out.generated == [True] and len(out.events[0]["correlation_id"]) == 36
