"""The Confluent REST backend (confluent_kafka's SchemaRegistryClient) against a local server
that speaks the Confluent Schema Registry API (raylane.testing.schema_registry, in-process)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from raylane.cli import app
from raylane.config import ConfluentRegistryConfig
from raylane.contracts import (
    SCHEMAS_DIR,
    Codec,
    FileSchemaRegistry,
    IncompatibleSchema,
    InvalidSchema,
    SchemaNotFound,
    SchemaRegistry,
    UnknownSchemaId,
    check_schemas,
    load_contract,
    open_registry,
    register_checked,
    register_contracts,
)
from raylane.contracts._confluent import ConfluentSchemaRegistry
from raylane.errors import ConfigError, DependencyError
from raylane.testing.schema_registry import LocalSchemaRegistry

SUBJECT = "payments.initiated-value"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalSchemaRegistry]:
    with LocalSchemaRegistry(tmp_path / "sr") as sr:
        yield sr


@pytest.fixture
def registry(server: LocalSchemaRegistry) -> ConfluentSchemaRegistry:
    reg = open_registry(ConfluentRegistryConfig(type="confluent", url=server.url))
    assert isinstance(reg, ConfluentSchemaRegistry) and isinstance(reg, SchemaRegistry)
    return reg


def _v1() -> dict[str, Any]:
    return json.loads(FileSchemaRegistry().get_version(SUBJECT, 1).text)


def _record() -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "correlation_id": None,
        "user_id": "u-1",
        "merchant_id": "m-1",
        "merchant_category": "food",
        "amount": 12.5,
        "currency": "EUR",
        "user_history_hash": "h",
        "event_time": 1_700_000_000_000,
    }


def test_register_read_back_and_codec_round_trip(registry: ConfluentSchemaRegistry) -> None:
    assert registry.subjects() == [] and registry.versions(SUBJECT) == []
    v1_id = registry.register(SUBJECT, _v1())
    assert registry.register(SUBJECT, _v1()) == v1_id  # idempotent
    ids = register_contracts(registry)  # the gate, then POST /subjects/{s}/versions
    assert registry.versions(SUBJECT) == [1, 2]
    assert ids[SUBJECT] == registry.latest(SUBJECT).id != v1_id
    assert registry.subjects() == sorted(ids)
    assert registry.get_version(SUBJECT, 1).id == v1_id
    assert registry.get_by_id(v1_id)["name"] == "raylane.PaymentInitiated"
    with pytest.raises(SchemaNotFound):
        registry.get_version(SUBJECT, 9)
    with pytest.raises(SchemaNotFound):
        registry.latest("nope-value")

    old, new = Codec(SUBJECT, registry, version=1), Codec(SUBJECT, registry)
    rec = _record()
    assert new.decode(old.encode(rec)) == {**rec, "device_id": None}
    assert old.decode(new.encode({**rec, "device_id": "d"})) == rec
    with pytest.raises(UnknownSchemaId):
        new.decode(b"\x00\x00\x00\x03\xe7" + new.encode(rec)[5:])


def test_server_enforces_compatibility_and_levels_round_trip(
    registry: ConfluentSchemaRegistry,
) -> None:
    assert registry.compatibility(SUBJECT) == "BACKWARD"  # falls back to the global level
    registry.register(SUBJECT, _v1())
    registry.register(SUBJECT, load_contract("payments.initiated"))
    assert registry.set_compatibility(SUBJECT, "full_transitive") == "FULL_TRANSITIVE"
    assert registry.compatibility(SUBJECT) == "FULL_TRANSITIVE"
    v3 = load_contract("payments.initiated")
    for f in v3["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"
    with pytest.raises(IncompatibleSchema, match="amount") as e:  # the server's 409
        registry.register(SUBJECT, v3)
    assert "error code 409" in e.value.message
    with pytest.raises(IncompatibleSchema, match="FULL_TRANSITIVE forbids it against v1, v2"):
        register_checked(registry, SUBJECT, v3)  # the local gate says why first
    assert registry.versions(SUBJECT) == [1, 2]
    with pytest.raises(InvalidSchema):
        registry.set_compatibility(SUBJECT, "SIDEWAYS")
    with pytest.raises(InvalidSchema):
        registry.register(SUBJECT, '{"type": "record"}')


def test_schema_check_cli_against_the_rest_registry(
    server: LocalSchemaRegistry, registry: ConfluentSchemaRegistry, tmp_path: Path
) -> None:
    runner = CliRunner()
    registry.register(SUBJECT, _v1())
    res = runner.invoke(app, ["schema", "register", "--url", server.url])
    assert res.exit_code == 0, res.output
    assert {c.status for c in check_schemas(registry)} == {"registered"}
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    path = schemas / "payments.initiated.avsc"
    broken = json.loads(path.read_text())
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "device_id"]
    broken["fields"].append({"name": "device_id", "type": "long"})
    path.write_text(json.dumps(broken))
    res = runner.invoke(app, ["schema", "check", "--url", server.url, "--schemas", str(schemas)])
    assert res.exit_code == 1
    assert (
        "payments.initiated-value: v3 changes `device_id` from null or string to long; "
        "BACKWARD forbids it against v2" in " ".join(res.output.split())
    )


def test_unreachable_registry_is_a_retriable_dependency_error() -> None:
    reg = ConfluentSchemaRegistry("http://127.0.0.1:9", **{"max.retries": 0, "timeout": 2})
    with pytest.raises(DependencyError) as e:
        reg.subjects()
    assert e.value.retriable and "127.0.0.1:9" in e.value.message


def test_basic_auth_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ConfluentRegistryConfig(type="confluent", url="http://sr:8081", basic_auth_env="SR_AUTH")
    with pytest.raises(ConfigError, match="SR_AUTH"):
        open_registry(cfg)
    monkeypatch.setenv("SR_AUTH", "user:secret")
    assert isinstance(open_registry(cfg), ConfluentSchemaRegistry)


class _Refusing:
    """A local HTTP server answering every request with one status (and a Confluent error)."""

    def __init__(self, status: int) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = json.dumps({"error_code": status * 100 + 1, "message": "refused"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [401, 403, 429])
def test_auth_and_rate_limit_answers_are_retriable_not_bad_events(status: int) -> None:
    srv = _Refusing(status)
    try:
        reg = ConfluentSchemaRegistry(
            f"http://127.0.0.1:{srv.port}", **{"basic.auth.user.info": "svc:hunter2"}
        )
        # a DependencyError, not a ContractError: the ingress pauses and retries the batch
        # instead of dead-lettering good events
        with pytest.raises(DependencyError) as e:
            reg.get_by_id(7)
    finally:
        srv.close()
    assert e.value.retriable and e.value.stage == "schema_registry"
    assert f"HTTP {status}" in e.value.message and "credentials" in e.value.message
    assert "hunter2" not in e.value.message


def test_a_bad_request_is_still_a_registry_error(tmp_path: Path) -> None:
    from raylane.contracts import SchemaRegistryError

    srv = _Refusing(400)
    try:
        with pytest.raises(SchemaRegistryError) as e:
            ConfluentSchemaRegistry(f"http://127.0.0.1:{srv.port}").get_by_id(7)
    finally:
        srv.close()
    assert not e.value.retriable


def test_credentials_in_the_registry_url_never_reach_messages() -> None:
    reg = ConfluentSchemaRegistry("http://svc:hunter2@127.0.0.1:1")
    assert "hunter2" not in repr(reg)
    with pytest.raises(DependencyError) as e:
        reg.subjects()
    assert "hunter2" not in e.value.message and "svc:***@127.0.0.1:1" in e.value.message
