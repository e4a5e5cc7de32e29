"""Contracts: schemas, the file registry and the wire-format codec (no services, no Ray)."""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import shutil
from pathlib import Path
from typing import Any, TypeVar

import pytest

from raylane.contracts import (
    BUILTIN_REGISTRY_DIR,
    BadMagicByte,
    Codec,
    ContractError,
    ContractViolation,
    CorruptEvent,
    EmptyEvent,
    EventTooLarge,
    FileSchemaRegistry,
    InvalidJson,
    InvalidSchema,
    MissingField,
    NonFiniteNumber,
    SchemaMismatch,
    SchemaNotFound,
    SchemaRegistry,
    TrailingBytes,
    TruncatedEvent,
    UnknownSchemaId,
    UnsupportedFormat,
    WrongType,
    contract_names,
    load_contract,
    register_contracts,
    schema_id_of,
    subject_for,
    wire_header,
)

T0 = 1_700_000_000_123

RECORDS: dict[str, dict[str, Any]] = {
    "payments.labels": {
        "event_id": "5b0d7c1e-3f4a-4c1b-9a8e-0f2b1c3d4e5f",
        "user_id": "u-000042",
        "label": True,
        "label_source": "chargeback",
        "event_time": T0,
        "labelled_at": T0 + 600_000,
    },
    "payments.initiated": {
        "event_id": "5b0d7c1e-3f4a-4c1b-9a8e-0f2b1c3d4e5f",
        "correlation_id": None,
        "user_id": "u-000042",
        "merchant_id": "m-0007",
        "merchant_category": "electronics",
        "amount": 129.99,
        "currency": "EUR",
        "user_history_hash": "3f786850e387550fdab836ed7e6dc881de23001b",
        "event_time": T0,
        "device_id": None,
    },
    "payments.scored": {
        "event_id": "5b0d7c1e-3f4a-4c1b-9a8e-0f2b1c3d4e5f",
        "correlation_id": "c-9f1e",
        "pipeline": "fraud",
        "user_id": "u-000042",
        "merchant_id": "m-0007",
        "amount": 129.99,
        "currency": "EUR",
        "event_time": T0,
        "score": 0.91,
        "decision": "flagged",
        "rule": "high_risk",
        "model_name": "fraud",
        "model_version": "3",
        "features": {
            "amount": 129.99,
            "risk_score": 0.4,
            "user_txn_count_60s": 6.0,
            "fraud_rate_90d": None,
        },
        "latency_ms": {"decode": 0.05, "features": 1.2, "score": 3.4, "total": 5.1},
        "scored_at": T0 + 7,
    },
    "payments.flagged": {
        "event_id": "5b0d7c1e-3f4a-4c1b-9a8e-0f2b1c3d4e5f",
        "correlation_id": "c-9f1e",
        "pipeline": "fraud",
        "user_id": "u-000042",
        "merchant_id": "m-0007",
        "merchant_category": "electronics",
        "amount": 129.99,
        "currency": "EUR",
        "event_time": T0,
        "score": 0.91,
        "decision": "flagged",
        "rule": "high_risk",
        "model_name": "fraud",
        "model_version": "3",
        "flagged_at": T0 + 7,
    },
    "fraud.shadow": {
        "event_id": "5b0d7c1e-3f4a-4c1b-9a8e-0f2b1c3d4e5f",
        "correlation_id": "c-9f1e",
        "pipeline": "fraud",
        "event_time": T0,
        "primary_model": "fraud",
        "primary_version": "3",
        "primary_score": 0.91,
        "primary_decision": "flagged",
        "shadow_model": "fraud",
        "shadow_version": "4",
        "shadow_score": 0.62,
        "shadow_decision": "approved",
        "agreement": False,
        "abs_delta": 0.29,
        "primary_latency_ms": 3.4,
        "shadow_latency_ms": 4.8,
        "compared_at": T0 + 20,
        "primary_label": "champion",
        "shadow_label": "challenger",
        "sample_fraction": 1.0,
    },
    "models.promoted": {
        "event_id": "p-1",
        "pipeline": "fraud",
        "action": "promote",
        "model_name": "fraud",
        "alias": "champion",
        "from_version": "3",
        "to_version": "4",
        "previous_alias": "previous",
        "actor": "ops@host",
        "at": T0,
        "forced": False,
        "reason": "",
        "gates": [
            {
                "name": "min_agreement",
                "threshold": "0.98",
                "measured": "0.991",
                "passed": True,
                "detail": "",
            }
        ],
    },
    "churn.activity": {
        "event_id": "a-1",
        "correlation_id": "c-1",
        "user_id": "u-7",
        "event_type": "login",
        "session_minutes": 12.5,
        "pages_viewed": 14,
        "days_since_last_login": 3.0,
        "plan": "pro",
        "event_time": T0,
    },
    "churn-risk-scored": {
        "event_id": "a-1",
        "correlation_id": "c-1",
        "pipeline": "churn",
        "user_id": "u-7",
        "plan": "pro",
        "event_time": T0,
        "score": 0.12,
        "decision": "none",
        "rule": None,
        "model_name": "churn",
        "model_version": "1",
        "features": {"session_minutes": 12.5, "pages_viewed": 14.0},
        "latency_ms": {"total": 2.0},
        "scored_at": T0 + 3,
    },
    "model.drift": {
        "event_id": "d-1",
        "correlation_id": "c-500",
        "pipeline": "fraud",
        "model_name": "fraud",
        "model_version": "3",
        "window_start": T0,
        "window_end": T0 + 25_000,
        "window_count": 500,
        "reference_count": 5000,
        "drift_share": 0.62,
        "threshold": 0.5,
        "columns_compared": 13,
        "drifted_columns": [{"column": "amount", "test": "PSI", "score": 0.35, "threshold": 0.1}],
        "prediction_drift": True,
        "report_uri": "file:///tmp/drift/fraud-v3.html",
        "detected_at": T0 + 26_000,
    },
    "payments.blocked": {
        "event_id": "e-1",
        "correlation_id": "c-1",
        "pipeline": "fraud",
        "user_id": "u-1",
        "merchant_id": "m-1",
        "amount": 900.0,
        "currency": "EUR",
        "score": 0.97,
        "rule": "high_risk",
        "model_name": "fraud",
        "model_version": "3",
        "reason": "flagged by a decision rule",
        "blocked_at": T0 + 5,
    },
}

# Global ids are re-assigned when branches merge, so they are read, never hard-coded.
_COMMITTED = FileSchemaRegistry()
EXPECTED_IDS = {s: _COMMITTED.latest(s).id for s in _COMMITTED.subjects()}


@pytest.fixture(scope="module")
def payments() -> Codec:
    return Codec.for_contract("payments.initiated", formats=("avro", "json"))


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


# -- schemas and the committed registry ---------------------------------------------


def test_every_contract_has_a_record_and_is_documented() -> None:
    assert set(contract_names()) == set(RECORDS)
    for name in contract_names():
        schema = load_contract(name)
        assert schema["namespace"] == "raylane"
        assert schema["doc"]
        for f in schema["fields"]:
            assert f.get("doc"), f"{name}.{f['name']} has no doc"
        assert [f["name"] for f in schema["fields"]] == list(RECORDS[name]), name


def test_committed_registry_has_stable_ids_and_matches_the_avsc_files(tmp_path: Path) -> None:
    reg = FileSchemaRegistry()
    assert {s: reg.latest(s).id for s in reg.subjects()} == EXPECTED_IDS
    copy = tmp_path / "registry"
    shutil.copytree(BUILTIN_REGISTRY_DIR, copy)
    # registering the .avsc files again is a no-op: same ids, byte-identical files
    assert register_contracts(FileSchemaRegistry(copy)) == EXPECTED_IDS
    cmp = filecmp.dircmp(BUILTIN_REGISTRY_DIR, copy, ignore=["__pycache__"])
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_output_fields_come_from_input_or_computed_fields() -> None:
    # outputs are built generically: every output field is an input field or a computed one
    computed = {
        "pipeline",
        "score",
        "decision",
        "rule",
        "model_name",
        "model_version",
        "features",
        "latency_ms",
        "scored_at",
        "flagged_at",
        "compared_at",
        "primary_model",
        "primary_version",
        "primary_score",
        "primary_decision",
        "shadow_model",
        "shadow_version",
        "shadow_score",
        "shadow_decision",
        "agreement",
        "abs_delta",
        "primary_latency_ms",
        "shadow_latency_ms",
        "primary_label",
        "shadow_label",
        "sample_fraction",
    }
    pairs = {
        "payments.initiated": ["payments.scored", "payments.flagged", "fraud.shadow"],
        "churn.activity": ["churn-risk-scored"],
    }
    for src, outs in pairs.items():
        inputs = set(RECORDS[src])
        for out in outs:
            assert set(RECORDS[out]) - inputs - computed == set(), out


# -- registry --------------------------------------------------------------------------


def test_file_registry_register_is_idempotent_and_versions_subjects(tmp_path: Path) -> None:
    reg = FileSchemaRegistry(tmp_path)
    assert isinstance(reg, SchemaRegistry)
    v1 = load_contract("payments.initiated")
    sid = reg.register("payments.initiated-value", v1)
    assert sid == 1
    # identical up to whitespace and key order: same id, no new version
    assert reg.register("payments.initiated-value", json.dumps(v1, indent=7, sort_keys=True)) == 1
    assert reg.versions("payments.initiated-value") == [1]
    # same schema under another subject shares the global id
    assert reg.register("other-value", v1) == 1
    assert reg.subjects() == ["other-value", "payments.initiated-value"]
    v2 = json.loads(json.dumps(v1))
    v2["fields"].append(
        {"name": "device_id", "type": ["null", "string"], "default": None, "doc": "d"}
    )
    assert reg.register("payments.initiated-value", v2) == 2
    latest = reg.latest("payments.initiated-value")
    assert (latest.version, latest.id) == (2, 2)
    assert reg.get_version("payments.initiated-value", 1).id == 1
    assert reg.get_by_id(2) is reg.get_by_id(2)  # parsed once, cached
    assert [f["name"] for f in reg.get_by_id(2)["fields"]][-1] == "device_id"
    # a second process (instance) sees what the first registered
    other = FileSchemaRegistry(tmp_path)
    assert other.latest("payments.initiated-value").id == 2
    v3 = json.loads(json.dumps(v2))
    v3["doc"] = "changed"
    assert other.register("payments.initiated-value", v3) == 3
    assert reg.get_by_id(3)["doc"] == "changed"
    assert reg.versions("payments.initiated-value") == [1, 2, 3]


def test_file_registry_errors(tmp_path: Path) -> None:
    reg = FileSchemaRegistry(tmp_path)
    with pytest.raises(SchemaNotFound, match="not registered"):
        reg.latest("nope-value")
    with pytest.raises(SchemaNotFound):
        reg.get_by_id(42)
    with pytest.raises(InvalidSchema):
        reg.register("x-value", "{not json")
    with pytest.raises(InvalidSchema):
        reg.register(
            "x-value", {"type": "record", "name": "X", "fields": [{"name": "a", "type": "nosuch"}]}
        )
    assert reg.subjects() == []
    reg.register("x-value", {"type": "record", "name": "X", "fields": []})
    with pytest.raises(SchemaNotFound, match="no version 7"):
        reg.get_version("x-value", 7)
    with pytest.raises(SchemaNotFound):
        Codec("missing-value", reg)


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("contract", sorted(RECORDS))
def test_round_trip_every_contract(contract: str) -> None:
    codec = Codec.for_contract(contract)
    record = RECORDS[contract]
    raw = codec.encode(record)
    assert raw[:5] == wire_header(EXPECTED_IDS[subject_for(contract)])
    assert schema_id_of(raw) == codec.schema_id == EXPECTED_IDS[codec.subject]
    assert codec.decode(raw) == record
    assert codec.decode(bytearray(raw)) == record
    assert codec.decode(memoryview(raw)) == record
    assert codec.encode_many([record, record]) == [raw, raw]
    assert codec.encode_many([record], validate=True) == [raw]
    assert codec.field_names == tuple(record)


def test_json_input_is_validated_and_normalised(payments: Codec) -> None:
    rec = dict(RECORDS["payments.initiated"])
    assert payments.decode(_json(rec)) == rec
    del rec["correlation_id"]  # default null filled in
    rec["amount"] = 130  # JSON int widened to double
    rec["unknown_extra"] = "dropped"
    out = payments.decode(b"  \n" + _json(rec))
    assert out["correlation_id"] is None
    assert out["amount"] == 130.0 and isinstance(out["amount"], float)
    assert "unknown_extra" not in out
    assert list(out) == list(payments.field_names)


def test_encode_takes_datetimes_and_decode_returns_epoch_millis(payments: Codec) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    raw = payments.encode({**RECORDS["payments.initiated"], "event_time": when})
    assert payments.decode(raw)["event_time"] == int(when.timestamp() * 1000)


# -- rejections -----------------------------------------------------------------------


E = TypeVar("E", bound=ContractError)


def _raises(codec: Codec, raw: Any, cls: type[E], stage: str = "decode") -> E:
    with pytest.raises(cls) as info:
        codec.decode(raw)
    err = info.value
    assert err.stage == stage and err.retriable is False and err.message
    return err


def test_too_large_is_checked_before_anything_else() -> None:
    small = Codec.for_contract("payments.initiated", max_event_bytes=64, formats=("avro", "json"))
    good = small.encode(RECORDS["payments.initiated"])
    _raises(small, b"\x07" * 65, EventTooLarge)  # bad magic byte, but too large first
    _raises(small, b"{" * 65, EventTooLarge)
    _raises(small, good + b"\x00" * (65 - len(good)), EventTooLarge)
    _raises(Codec.for_contract("payments.initiated"), b"\x00" * ((1 << 20) + 1), EventTooLarge)


def test_empty_bad_magic_and_unsupported_format(payments: Codec) -> None:
    _raises(payments, b"", EmptyEvent)
    _raises(payments, None, EmptyEvent)
    err = _raises(payments, b"\x01\x00\x00\x00\x01abc", BadMagicByte)
    assert "0x01" in str(err)
    _raises(payments, "a str, not bytes", UnsupportedFormat)
    avro_only = Codec.for_contract("payments.initiated")
    _raises(avro_only, _json(RECORDS["payments.initiated"]), UnsupportedFormat)
    json_only = Codec.for_contract("payments.initiated", formats=("json",))
    _raises(json_only, avro_only.encode(RECORDS["payments.initiated"]), UnsupportedFormat)
    with pytest.raises(ValueError):
        Codec.for_contract("payments.initiated", formats=("protobuf",))


def test_truncated_at_every_cut_and_trailing_bytes(payments: Codec) -> None:
    raw = payments.encode(RECORDS["payments.initiated"])
    for cut in range(1, len(raw)):
        _raises(payments, raw[:cut], TruncatedEvent)
    err = _raises(payments, raw + b"\x00\x01", TrailingBytes)
    assert "2 bytes left" in str(err)
    assert isinstance(err, CorruptEvent)


def test_unknown_schema_id_and_mismatched_subject(payments: Codec) -> None:
    body = payments.encode(RECORDS["payments.initiated"])[5:]
    err = _raises(payments, wire_header(9999) + body, UnknownSchemaId)
    assert "9999" in str(err)
    scored = Codec.for_contract("payments.scored").encode(RECORDS["payments.scored"])
    mismatch = _raises(payments, scored, SchemaMismatch)
    assert "PaymentScored" in str(mismatch)
    _raises(payments, scored, SchemaMismatch)  # cached verdict, same error


def test_corrupt_body_is_typed(payments: Codec) -> None:
    raw = bytearray(payments.encode(RECORDS["payments.initiated"]))
    raw[5 + 1 + 36] = 0x08  # correlation_id union index 4: no such branch
    _raises(payments, bytes(raw), CorruptEvent)
    bad_utf8 = wire_header(1) + b"\x04\xff\xfe" + bytes(raw[5 + 1 + 36 :])
    _raises(payments, bad_utf8, CorruptEvent)


def test_json_missing_field_and_wrong_type_name_the_field(payments: Codec) -> None:
    rec = dict(RECORDS["payments.initiated"])
    err = _raises(payments, _json({**rec, "amount": "12.5"}), WrongType, stage="validate")
    assert str(err).startswith("amount: expected double, got str '12.5'")
    assert isinstance(err, ContractViolation) and err.path == "amount"
    missing = _raises(
        payments, _json({k: v for k, v in rec.items() if k != "user_id"}), MissingField, "validate"
    )
    assert missing.path == "user_id" and "user_id: missing required field" in str(missing)
    err = _raises(payments, _json({**rec, "event_time": 1.5e12}), WrongType, "validate")
    assert err.path == "event_time" and "expected long" in str(err)
    err = _raises(payments, _json({**rec, "correlation_id": 7}), WrongType, "validate")
    assert "correlation_id: expected null or string, got int 7" in str(err)
    err = _raises(payments, _json({**rec, "amount": True}), WrongType, "validate")
    assert err.path == "amount"
    err = _raises(payments, b'{"event_id": "\\ud800"}', WrongType, "validate")
    assert err.path == "event_id"
    scored = Codec.for_contract("payments.scored", formats=("json",))
    bad = {**RECORDS["payments.scored"], "features": {"risk_score": "high"}}
    err = _raises(scored, _json(bad), WrongType, "validate")
    assert err.path == "features['risk_score']"
    assert "expected null or double, got str 'high'" in str(err)


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"a": 1', b'{"a": "\xff\xfe"}', b"{" * 50_000, b'{"a": 1} trailing', b'{"a": NaN'],
)
def test_invalid_json(payments: Codec, raw: bytes) -> None:
    _raises(payments, raw, InvalidJson)


def test_encode_rejects_bad_records_naming_the_field(payments: Codec) -> None:
    rec = RECORDS["payments.initiated"]
    with pytest.raises(WrongType) as info:
        payments.encode({**rec, "amount": "12.5"})
    assert str(info.value).startswith("amount: expected double, got str '12.5'")
    assert info.value.stage == "validate"
    with pytest.raises(MissingField, match="merchant_id"):
        payments.encode({k: v for k, v in rec.items() if k != "merchant_id"})
    with pytest.raises(WrongType, match="event_time: expected long"):
        payments.encode({**rec, "event_time": 2**70})
    with pytest.raises(WrongType, match="record: expected record"):
        payments.encode(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(WrongType, match=r"records\[1\]") as info:
        payments.encode_many([rec, {**rec, "user_id": None}])
    assert info.value.path == "user_id"
    scored = Codec.for_contract("payments.scored")
    with pytest.raises(WrongType) as info:
        scored.encode_many([{**RECORDS["payments.scored"], "latency_ms": {"total": None}}])
    assert info.value.path == "latency_ms['total']"


def test_decode_batch_separates_oks_and_errs(payments: Codec) -> None:
    good = payments.encode(RECORDS["payments.initiated"])
    raws = [good, b"", good[:-3], _json(RECORDS["payments.initiated"]), b"\x05", good + b"x"]
    oks, errs = payments.decode_batch(raws)
    assert [i for i, _ in oks] == [0, 3]
    assert all(rec == RECORDS["payments.initiated"] for _, rec in oks)
    assert [(i, type(e)) for i, e in errs] == [
        (1, EmptyEvent),
        (2, TruncatedEvent),
        (4, BadMagicByte),
        (5, TrailingBytes),
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_amount_is_rejected_on_every_path(payments: Codec, bad: float) -> None:
    """A NaN or infinite double passes fastavro's checks; the contract rejects it at encode
    (the platform's producer), at JSON decode (``NaN``, ``1e999``) and at Avro decode."""
    rec = dict(RECORDS["payments.initiated"], amount=bad)
    with pytest.raises(NonFiniteNumber, match="amount: expected a finite"):
        payments.encode(rec)
    # Avro bytes of the same record, written without the contract's check
    from io import BytesIO

    from fastavro import schemaless_writer

    buf = BytesIO()
    schemaless_writer(buf, payments.schema, rec)
    raw = wire_header(payments.schema_id) + buf.getvalue()
    with pytest.raises(NonFiniteNumber, match="amount"):
        payments.decode(raw)
    oks, errs = payments.decode_batch([payments.encode(RECORDS["payments.initiated"]), raw])
    assert [i for i, _ in oks] == [0] and [(i, type(e)) for i, e in errs] == [(1, NonFiniteNumber)]
    text = {"nan": "NaN", "inf": "1e999", "-inf": "-Infinity"}[repr(bad)]
    body = json.dumps(dict(RECORDS["payments.initiated"], amount=0.5)).replace("0.5", text)
    with pytest.raises(NonFiniteNumber, match="amount"):
        payments.decode(body.encode())
    assert isinstance(NonFiniteNumber("x"), WrongType) and not NonFiniteNumber("x").retriable


def test_non_finite_inside_a_nested_map_is_found() -> None:
    scored = Codec.for_contract("payments.scored")
    rec = dict(RECORDS["payments.scored"])
    rec["features"] = {**rec["features"], "velocity_60s": float("inf")}
    from io import BytesIO

    from fastavro import schemaless_writer

    buf = BytesIO()
    schemaless_writer(buf, scored.schema, rec)
    with pytest.raises(NonFiniteNumber, match=r"features\.velocity_60s"):
        scored.decode(wire_header(scored.schema_id) + buf.getvalue())


def test_wire_helpers() -> None:
    assert wire_header(1) == b"\x00\x00\x00\x00\x01"
    assert wire_header(0x01020304) == b"\x00\x01\x02\x03\x04"
    assert schema_id_of(b"\x00\x00\x00\x01\x00rest") == 256
    assert schema_id_of(b"\x01\x00\x00\x00\x01") is None
    assert schema_id_of(b"\x00\x00") is None
    assert schema_id_of(None) is None
    with pytest.raises(ValueError):
        wire_header(-1)


# -- schema evolution ------------------------------------------------------------------


def _v2(tmp_path: Path) -> tuple[FileSchemaRegistry, dict[str, Any]]:
    """A fresh registry holding the shipped v1 and v2 of payments.initiated."""
    reg = FileSchemaRegistry(tmp_path)
    v1 = json.loads(_COMMITTED.get_version("payments.initiated-value", 1).text)
    assert "device_id" not in {f["name"] for f in v1["fields"]}
    reg.register("payments.initiated-value", v1)
    v2 = load_contract("payments.initiated")  # the working tree's: v2 adds device_id
    reg.register("payments.initiated-value", v2)
    return reg, v2


def test_v1_event_is_read_by_v2_reader(tmp_path: Path) -> None:
    reg, _ = _v2(tmp_path)
    v1 = Codec("payments.initiated-value", reg, version=1)
    v2 = Codec("payments.initiated-value", reg, formats=("avro", "json"))
    assert (v1.schema_id, v2.schema_id, v2.version) == (1, 2, 2)
    rec = {k: v for k, v in RECORDS["payments.initiated"].items() if k != "device_id"}
    assert v2.decode(v1.encode(rec)) == {**rec, "device_id": None}
    # and the reverse: a v1 reader ignores the field it does not know
    new = {**rec, "device_id": "ios-17"}
    assert v2.decode(v2.encode(new)) == new
    assert v1.decode(v2.encode(new)) == rec
    assert v2.decode(_json(rec))["device_id"] is None


def test_unresolvable_writer_in_same_subject_is_a_schema_mismatch(tmp_path: Path) -> None:
    reg, v2 = _v2(tmp_path)
    v3 = json.loads(json.dumps(v2))
    for f in v3["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"  # incompatible change (the file registry does not check)
    reg.register("payments.initiated-value", v3)
    old = Codec("payments.initiated-value", reg, version=1).encode(RECORDS["payments.initiated"])
    latest = Codec("payments.initiated-value", reg)
    with pytest.raises(SchemaMismatch, match="schema id 1"):
        latest.decode(old)


def test_concurrent_registrations_get_distinct_ids(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def register(i: int) -> int:
        schema = {"type": "record", "name": f"R{i}", "fields": [{"name": "a", "type": "long"}]}
        return FileSchemaRegistry(tmp_path).register(f"s{i}-value", schema)

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(register, range(16)))
    assert sorted(ids) == list(range(1, 17))
    reg = FileSchemaRegistry(tmp_path)
    assert len(reg.subjects()) == 16
    assert {reg.latest(f"s{i}-value").id for i in range(16)} == set(ids)


def test_package_docstring_example_runs() -> None:
    import raylane.contracts

    doc = raylane.contracts.__doc__ or ""
    example = doc.split("Example::", 1)[1]
    code = "\n".join(line[4:] for line in example.splitlines() if line.startswith("    "))
    scope: dict[str, Any] = {"Codec": Codec, "event": RECORDS["payments.initiated"]}
    exec(code, scope)
    assert [i for i, _ in scope["oks"]] == [0] and [i for i, _ in scope["errs"]] == [1]
