"""Consumer-driven contracts: every consumer's declared fields hold for every registered
producer schema (schema-level check with the avro checker, and Pact message pacts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raylane.config import load_serve_config
from raylane.contracts import (
    BUILTIN_REGISTRY_DIR,
    ConsumerDeclaration,
    FileSchemaRegistry,
    all_declarations,
    check_declarations,
    load_contract,
    load_declarations,
    pipeline_reads,
)
from raylane.contracts._pacts import sample_event, verify_pacts, write_pacts
from raylane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SERVE_CONFIGS = sorted((ROOT / "serve_configs").glob("*.yaml"))


def _all_declarations() -> list[ConsumerDeclaration]:
    """The declaration files plus one derived declaration per pipeline ingress."""
    return all_declarations(serve_configs=SERVE_CONFIGS)


def test_every_registered_schema_satisfies_every_declaration() -> None:
    decls = _all_declarations()
    assert {d.consumer for d in decls} >= {"ingress:fraud", "ingress:churn", "live-watcher"}
    violations = check_declarations(FileSchemaRegistry(), decls)
    assert [v.message for v in violations] == []


def test_the_fraud_ingress_declares_what_its_config_reads() -> None:
    _, cfg = load_serve_config(ROOT / "serve_configs/fraud.yaml")
    reads = pipeline_reads(cfg).reads["payments.initiated"]
    assert reads["amount"] == "double"  # features.event and a window's value field
    assert reads["event_time"] == "long"  # windows
    assert {"user_id", "merchant_id", "event_id"} <= set(reads)  # key, entities, windows
    assert reads["merchant_category"] == "string"  # copied into payments.scored


@pytest.fixture
def broken_registry(tmp_path: Path) -> FileSchemaRegistry:
    """The committed registry plus a v3 of payments.initiated with `amount` as a string and
    `merchant_id` gone, registered past the gate (compatibility NONE)."""
    shutil.copytree(BUILTIN_REGISTRY_DIR, tmp_path / "registry")
    reg = FileSchemaRegistry(tmp_path / "registry")
    v3 = load_contract("payments.initiated")
    v3["fields"] = [f for f in v3["fields"] if f["name"] != "merchant_id"]
    for f in v3["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"
    reg.set_compatibility("payments.initiated-value", "NONE")
    reg.register("payments.initiated-value", v3)
    return reg


def test_a_breaking_producer_schema_fails_naming_consumer_and_field(
    broken_registry: FileSchemaRegistry,
) -> None:
    messages = [v.message for v in check_declarations(broken_registry, _all_declarations())]
    assert (
        "consumer ingress:fraud reads `amount` as double from payments.initiated, "
        "but payments.initiated-value v3 has it as string"
    ) in messages
    assert (
        "consumer ingress:fraud reads `merchant_id` (any) from payments.initiated, "
        "but payments.initiated-value v3 has no such field"
    ) in messages
    assert all("v3" in m for m in messages)


def test_nullable_and_promoted_types() -> None:
    reg = FileSchemaRegistry()
    ok = ConsumerDeclaration(
        consumer="c",
        reads={
            "payments.initiated": {
                "event_time": "double",  # long is promoted to double
                "correlation_id": "string?",
            }
        },
    )
    assert check_declarations(reg, [ok]) == []
    strict = ConsumerDeclaration(
        consumer="c",
        reads={"payments.initiated": {"correlation_id": "string", "device_id": "string?"}},
    )
    messages = [v.message for v in check_declarations(reg, [strict])]
    assert messages == [
        (
            "consumer c reads `correlation_id` as string from payments.initiated, but "
            "payments.initiated-value v1 has it as null or string"
        ),
        (
            "consumer c reads `device_id` (string?) from payments.initiated, but "
            "payments.initiated-value v1 has no such field"
        ),  # v1 producers never send it
        (
            "consumer c reads `correlation_id` as string from payments.initiated, but "
            "payments.initiated-value v2 has it as null or string"
        ),
    ]
    unknown = ConsumerDeclaration(consumer="c", reads={"no.such.topic": {"x": "long"}})
    assert "no such field" in check_declarations(reg, [unknown])[0].message


def test_declaration_files_are_validated(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "consumer: c\nreads:\n  payments.scored:\n    score: decimal\n"
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml.*decimal"):
        load_declarations(tmp_path)


def test_pacts_verify_every_registered_version_and_name_the_broken_field(
    tmp_path: Path, broken_registry: FileSchemaRegistry
) -> None:
    decls = _all_declarations()
    pacts = write_pacts(decls, tmp_path / "pacts")
    assert all(p.is_file() for p in pacts)
    doc = json.loads((tmp_path / "pacts/ingress:fraud-payments.initiated.json").read_text())
    assert doc["consumer"]["name"] == "ingress:fraud" and doc["interactions"][0]["type"] == (
        "Asynchronous/Messages"
    )
    contracts = {c for d in decls for c in d.reads}
    assert verify_pacts(FileSchemaRegistry(), tmp_path / "pacts", contracts) == []
    failures = verify_pacts(broken_registry, tmp_path / "pacts", ["payments.initiated"])
    assert len(failures) == 1 and failures[0].startswith("payments.initiated-value v3:")
    assert "ingress:fraud" in failures[0] and "$.amount" in failures[0]


def test_sample_events_follow_each_version() -> None:
    reg = FileSchemaRegistry()
    v1 = sample_event(reg, "payments.initiated-value", 1)
    v2 = sample_event(reg, "payments.initiated-value", 2)
    assert "device_id" not in v1 and v2["device_id"] == "x"
