"""Property tests: whatever bytes or dicts come in, only ContractError subclasses come out."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raylane.contracts import (
    Codec,
    ContractError,
    ContractViolation,
    TrailingBytes,
    TruncatedEvent,
    contract_names,
    wire_header,
)

CODECS = {n: Codec.for_contract(n, formats=("avro", "json")) for n in contract_names()}
PAYMENTS = CODECS["payments.initiated"]
SCORED = CODECS["payments.scored"]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- valid records generated from the schema ---------------------------------------------

_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_DOUBLE = st.floats(allow_nan=False, allow_infinity=False)  # non-finite: NonFiniteNumber


def _value(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of([_value(s) for s in schema])
    if isinstance(schema, dict):
        if schema["type"] == "map":
            return st.dictionaries(st.text(max_size=8), _value(schema["values"]), max_size=4)
        if schema["type"] == "array":
            return st.lists(_value(schema["items"]), max_size=3)
        if schema["type"] == "enum":
            return st.sampled_from(schema["symbols"])
        if schema["type"] == "record":
            return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in schema["fields"]})
        return _value(schema["type"])
    return {
        "null": st.none(),
        "string": st.text(max_size=20),
        "double": _DOUBLE,
        "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "long": _LONG,
        "boolean": st.booleans(),
    }[schema]


def _records(codec: Codec) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in codec.schema["fields"]})


@st.composite
def _codec_and_record(draw: st.DrawFn) -> tuple[Codec, dict[str, Any]]:
    codec = draw(st.sampled_from(list(CODECS.values())))
    return codec, draw(_records(codec))


@FUZZ
@given(_codec_and_record())
def test_valid_records_round_trip_avro_and_json(pair: tuple[Codec, dict[str, Any]]) -> None:
    codec, record = pair
    raw = codec.encode(record)
    assert codec.decode(raw) == record
    assert codec.encode_many([record]) == [raw]
    assert codec.decode(json.dumps(record).encode()) == record


# -- hostile bytes ------------------------------------------------------------------------


def _decode_only_contract_errors(codec: Codec, raw: bytes) -> dict[str, Any] | None:
    try:
        out = codec.decode(raw)
    except ContractError as e:
        assert e.message and e.stage in ("decode", "validate")
        return None
    assert isinstance(out, dict) and list(out) == list(codec.field_names)
    return out


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(raw: bytes) -> None:
    _decode_only_contract_errors(PAYMENTS, raw)


@FUZZ
@given(st.sampled_from([1, 2, 5, 7, 0xFFFFFFFF]), st.binary(max_size=400))
def test_random_bodies_behind_a_valid_header(schema_id: int, body: bytes) -> None:
    _decode_only_contract_errors(PAYMENTS, wire_header(schema_id) + body)
    _decode_only_contract_errors(SCORED, wire_header(schema_id) + body)


@FUZZ
@given(_codec_and_record(), st.data())
def test_bit_flips(pair: tuple[Codec, dict[str, Any]], data: st.DataObject) -> None:
    codec, record = pair
    raw = bytearray(codec.encode(record))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    _decode_only_contract_errors(codec, bytes(raw))


@FUZZ
@given(_codec_and_record(), st.data())
def test_truncations_are_truncated_events(
    pair: tuple[Codec, dict[str, Any]], data: st.DataObject
) -> None:
    codec, record = pair
    raw = codec.encode(record)
    cut = data.draw(st.integers(1, len(raw) - 1))
    try:
        codec.decode(raw[:cut])
    except TruncatedEvent:
        pass
    else:
        raise AssertionError(f"decoding {cut} of {len(raw)} bytes did not raise TruncatedEvent")


@FUZZ
@given(_codec_and_record(), st.binary(min_size=1, max_size=64))
def test_appended_bytes_are_trailing_bytes(
    pair: tuple[Codec, dict[str, Any]], extra: bytes
) -> None:
    codec, record = pair
    try:
        codec.decode(codec.encode(record) + extra)
    except TrailingBytes:
        pass
    else:
        raise AssertionError("appended bytes were not reported as TrailingBytes")


# -- hostile dicts ------------------------------------------------------------------------

_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def _mangled(draw: st.DrawFn) -> tuple[Codec, dict[str, Any]]:
    """A record of some contract with fields dropped, replaced or added at random."""
    codec, record = draw(_codec_and_record())
    names = [*list(record), "extra"]
    for name in draw(st.lists(st.sampled_from(names), max_size=4)):
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(_ANY)
    return codec, record


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


@FUZZ
@given(_mangled())
def test_random_dicts_into_encode(pair: tuple[Codec, dict[str, Any]]) -> None:
    codec, record = pair
    try:
        raw = codec.encode(record)
    except ContractViolation as e:
        assert e.stage == "validate" and e.message
    else:
        decoded = codec.decode(raw)  # anything encode accepts must decode
        for name, value in decoded.items():
            if name in record and isinstance(value, (str, bool)):
                assert _same(record[name], value), name
    with contextlib.suppress(ContractViolation):
        codec.encode_many([record])


@FUZZ
@given(_mangled())
def test_random_dicts_as_json(pair: tuple[Codec, dict[str, Any]]) -> None:
    codec, record = pair
    try:
        raw = json.dumps(record).encode()
    except (TypeError, ValueError):
        assume(False)  # bytes values are not JSON
        return
    _decode_only_contract_errors(codec, raw)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_a_json_brace(tail: bytes) -> None:
    _decode_only_contract_errors(PAYMENTS, b"{" + tail)


# -- versions, hostile lengths, memory ----------------------------------------------------

V1 = Codec.for_contract("payments.initiated", version=1, formats=("avro", "json"))


@FUZZ
@given(st.data())
def test_v1_reader_on_mutated_v2_events(data: st.DataObject) -> None:
    record = data.draw(_records(PAYMENTS))
    raw = bytearray(PAYMENTS.encode(record))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(5, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    out = _decode_only_contract_errors(V1, bytes(raw))
    if out is not None:
        assert "device_id" not in out


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@FUZZ
@given(
    st.integers(min_value=1 << 20, max_value=(1 << 62)),
    st.binary(max_size=64),
    st.sampled_from(list(CODECS.values())),
)
def test_hostile_lengths_and_counts_do_not_allocate(n: int, tail: bytes, codec: Codec) -> None:
    """A string length or map block count of billions must not make the reader allocate it."""
    import tracemalloc

    raw = wire_header(codec.schema_id) + _zigzag_varint(n) + tail
    tracemalloc.start()
    try:
        _decode_only_contract_errors(codec, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decoding {len(raw)} bytes peaked at {peak} bytes"


@FUZZ
@given(st.integers(min_value=1, max_value=4096), st.binary(min_size=1, max_size=1))
def test_payloads_over_the_limit_are_rejected_before_parsing(limit: int, lead: bytes) -> None:
    from raylane.contracts import EventTooLarge

    codec = Codec.for_contract(
        "payments.initiated", formats=("avro", "json"), max_event_bytes=limit
    )
    try:
        codec.decode(lead * (limit + 1))
    except EventTooLarge as e:
        assert str(limit) in e.message
    else:
        raise AssertionError("an event over max_event_bytes was decoded")


@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda b: b"\x00" + b, st.binary(max_size=300)))
def test_dlq_describe_never_raises(raw: bytes) -> None:
    from raylane.contracts import FileSchemaRegistry
    from raylane.kafka.deadletters import describe_value

    text = describe_value(raw, FileSchemaRegistry(), "payments.initiated-value")
    assert isinstance(text, str) and len(text) <= 200
