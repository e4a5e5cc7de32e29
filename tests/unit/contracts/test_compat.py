"""The compatibility gate: levels computed by the avro checker, `raylane schema check/register`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from raylane.cli import app
from raylane.config import ConfluentRegistryConfig, FileRegistryConfig, PipelineConfig
from raylane.contracts import (
    BUILTIN_REGISTRY_DIR,
    SCHEMAS_DIR,
    FileSchemaRegistry,
    IncompatibleSchema,
    InvalidSchema,
    check_compatibility,
    check_schemas,
    format_issues,
    load_contract,
    register_checked,
    register_contracts,
)
from raylane.errors import ConfigError

SUBJECT = "payments.initiated-value"


def _base() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "R",
        "namespace": "t",
        "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}],
    }


def _with(schema: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(schema))
    for name, field in changes.items():
        out["fields"] = [f for f in out["fields"] if f["name"] != name]
        if field is not None:
            out["fields"].append({"name": name, **field})
    return out


ADD_OPTIONAL = {"c": {"type": ["null", "string"], "default": None}}
ADD_REQUIRED = {"c": {"type": "string"}}
DROP_REQUIRED = {"b": None}
RETYPE = {"a": {"type": "string"}}
WIDEN = {"a": {"type": "double"}}  # long -> double: new readers read old data, not the reverse


@pytest.mark.parametrize(
    ("change", "level", "ok"),
    [
        (ADD_OPTIONAL, "BACKWARD", True),
        (ADD_OPTIONAL, "FULL_TRANSITIVE", True),
        (ADD_REQUIRED, "BACKWARD", False),
        (ADD_REQUIRED, "FORWARD", True),
        (DROP_REQUIRED, "BACKWARD", True),
        (DROP_REQUIRED, "FORWARD", False),
        (DROP_REQUIRED, "FULL", False),
        (RETYPE, "BACKWARD", False),
        (RETYPE, "NONE", True),
        (WIDEN, "BACKWARD", True),
        (WIDEN, "FORWARD", False),
    ],
)
def test_levels(change: dict[str, Any], level: str, ok: bool) -> None:
    issues = check_compatibility("s-value", _with(_base(), **change), [_base()], level)
    assert (not issues) is ok, format_issues(issues)


def test_transitive_levels_check_every_version_others_only_the_latest() -> None:
    v1 = _base()
    v2 = _with(v1, b=None)  # drops b (BACKWARD-compatible)
    v3 = _with(v2, b={"type": "long", "default": 0})  # re-adds b with another type
    assert check_compatibility("s-value", v3, [v1, v2], "BACKWARD") == []
    issues = check_compatibility("s-value", v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert format_issues(issues) == [
        "s-value: v3 changes `b` from string to long; BACKWARD_TRANSITIVE forbids it against v1"
    ]


def test_message_names_subject_versions_field_and_rule() -> None:
    v1 = load_contract("payments.initiated")
    v2 = _with(v1, note={"type": ["null", "string"], "default": None})
    v3 = _with(v2, amount={"type": "string"})
    issues = check_compatibility(SUBJECT, v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert format_issues(issues) == [
        (
            f"{SUBJECT}: v3 changes `amount` from double to string; "
            "BACKWARD_TRANSITIVE forbids it against v1, v2"
        )
    ]
    removed = check_compatibility(SUBJECT, _with(v1, currency=None), [v1], "FORWARD")
    assert "removes `currency`" in format_issues(removed)[0]


def test_unknown_level_and_bad_schema_are_typed_errors() -> None:
    with pytest.raises(InvalidSchema, match="FULLISH"):
        check_compatibility("s-value", _base(), [_base()], "FULLISH")
    with pytest.raises(InvalidSchema):
        check_compatibility("s-value", {"type": "record"}, [_base()], "BACKWARD")


# -- the committed registry and the working tree -------------------------------------------


def test_committed_schemas_pass_the_gate() -> None:
    checks = check_schemas(FileSchemaRegistry())
    assert [c.message for c in checks if not c.ok] == []
    assert {c.status for c in checks} == {"registered"}, [c.message for c in checks]


def test_payments_initiated_v2_adds_an_optional_device_id() -> None:
    reg = FileSchemaRegistry()
    assert reg.versions(SUBJECT)[:2] == [1, 2]
    v1, v2 = (json.loads(reg.get_version(SUBJECT, v).text) for v in (1, 2))
    added = [f for f in v2["fields"] if f["name"] not in {g["name"] for g in v1["fields"]}]
    assert added == [
        {"name": "device_id", "type": ["null", "string"], "default": None, "doc": added[0]["doc"]}
    ]
    assert reg.compatibility(SUBJECT) == "FULL_TRANSITIVE"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the committed registry and of the schemas, to break."""
    shutil.copytree(BUILTIN_REGISTRY_DIR, tmp_path / "registry")
    shutil.copytree(SCHEMAS_DIR, tmp_path / "schemas")
    return tmp_path / "registry", tmp_path / "schemas"


def _break_amount(schemas: Path) -> None:
    path = schemas / "payments.initiated.avsc"
    schema = json.loads(path.read_text())
    for f in schema["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"
    path.write_text(json.dumps(schema, indent=2))


def test_breaking_v3_fixture_is_rejected_by_check_and_register(tree: tuple[Path, Path]) -> None:
    registry, schemas = tree
    _break_amount(schemas)
    runner = CliRunner()
    args = ["--registry", str(registry), "--schemas", str(schemas)]
    res = runner.invoke(app, ["schema", "check", *args])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert (
        f"{SUBJECT}: v3 changes `amount` from double to string; FULL_TRANSITIVE "
        "forbids it against v1, v2"
    ) in text
    res = runner.invoke(app, ["schema", "register", *args])
    assert res.exit_code == 1 and "forbids it" in res.output
    assert FileSchemaRegistry(registry).versions(SUBJECT) == [1, 2]  # nothing registered


def test_compatible_change_passes_check_then_registers(tree: tuple[Path, Path]) -> None:
    registry, schemas = tree
    path = schemas / "payments.initiated.avsc"
    path.write_text(
        json.dumps(
            _with(
                json.loads(path.read_text()), channel={"type": ["null", "string"], "default": None}
            )
        )
    )
    runner = CliRunner()
    args = ["--registry", str(registry), "--schemas", str(schemas)]
    res = runner.invoke(app, ["schema", "check", *args])
    assert res.exit_code == 0, res.output
    assert "compatible" in res.output and "v3" in res.output
    res = runner.invoke(app, ["schema", "register", *args])
    assert res.exit_code == 0, res.output
    reg = FileSchemaRegistry(registry)
    assert reg.versions(SUBJECT) == [1, 2, 3]
    assert {c.status for c in check_schemas(reg, schemas)} == {"registered"}
    # and registering again is a no-op
    before = reg.latest(SUBJECT).id
    assert register_contracts(reg, directory=schemas)[SUBJECT] == before


def test_compat_command_and_level_none_lets_anything_through(tree: tuple[Path, Path]) -> None:
    registry, schemas = tree
    runner = CliRunner()
    res = runner.invoke(
        app, ["schema", "compat", "payments.initiated", "NONE", "--registry", str(registry)]
    )
    assert res.exit_code == 0 and "NONE" in res.output
    reg = FileSchemaRegistry(registry)
    assert reg.compatibility(SUBJECT) == "NONE"
    _break_amount(schemas)
    assert register_checked(reg, SUBJECT, load_contract("payments.initiated", schemas)) > 0
    res = runner.invoke(app, ["schema", "compat", SUBJECT, "SIDEWAYS", "--registry", str(registry)])
    assert res.exit_code == 1 and "SIDEWAYS" in res.output


def test_register_checked_raises_typed_error_with_issues(tree: tuple[Path, Path]) -> None:
    registry, schemas = tree
    _break_amount(schemas)
    with pytest.raises(IncompatibleSchema) as e:
        register_checked(
            FileSchemaRegistry(registry), SUBJECT, load_contract("payments.initiated", schemas)
        )
    assert {i.field for i in e.value.issues} == {"amount"}
    assert e.value.stage == "schema_registry" and not e.value.retriable


# -- config -----------------------------------------------------------------------------------


def _args(**extra: Any) -> dict[str, Any]:
    import yaml

    root = Path(__file__).resolve().parents[3]
    doc = yaml.safe_load((root / "serve_configs/fraud.yaml").read_text())
    return {**doc["applications"][0]["args"], **extra}


def test_schema_registry_config_is_a_discriminated_union(tmp_path: Path) -> None:
    assert PipelineConfig.from_args(_args()).schema_registry == FileRegistryConfig()
    cfg = PipelineConfig.from_args(_args(schema_registry="some/dir"))
    assert isinstance(cfg.schema_registry, FileRegistryConfig)
    assert Path(cfg.schema_registry.path).is_absolute()  # pinned for Serve replicas
    cfg = PipelineConfig.from_args(
        _args(schema_registry={"type": "confluent", "url": "http://sr:8081"})
    )
    assert isinstance(cfg.schema_registry, ConfluentRegistryConfig)
    # round trip through the replicas' JSON
    assert PipelineConfig.from_args(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ConfigError, match=r"args\.schema_registry\.confluent\.url"):
        PipelineConfig.from_args(_args(schema_registry={"type": "confluent", "url": "sr:8081"}))
    with pytest.raises(ConfigError, match=r"args\.schema_registry"):
        PipelineConfig.from_args(_args(schema_registry={"type": "zookeeper"}))


def test_check_also_fails_a_compatible_change_that_breaks_a_consumer(
    tree: tuple[Path, Path],
) -> None:
    """Dropping a field is BACKWARD-compatible, but the live dashboard reads it."""
    registry, schemas = tree
    path = schemas / "payments.scored.avsc"
    schema = json.loads(path.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "model_version"]
    path.write_text(json.dumps(schema))
    res = CliRunner().invoke(
        app, ["schema", "check", "--registry", str(registry), "--schemas", str(schemas)]
    )
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "payments.scored-value: v2 is BACKWARD-compatible with v1" in text
    assert (
        "consumer live-watcher reads `model_version` (string?) from payments.scored, but "
        "payments.scored-value v2 has no such field"
    ) in text


def _rec(name: str = "R", **fields: Any) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "fields": [{"name": k, "type": v} for k, v in fields.items()],
    }


@pytest.mark.parametrize(
    ("old", "new", "level", "line"),
    [
        (
            _rec(s={"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}),
            _rec(s={"type": "enum", "name": "S", "symbols": ["A", "B"]}),
            "BACKWARD",
            "removes symbols ['C'] from enum `s`",
        ),
        (
            _rec(m={"type": "map", "values": "double"}),
            _rec(m={"type": "map", "values": "string"}),
            "FORWARD",
            "changes `m` from map of double to map of string",
        ),
        (
            _rec(n=_rec("N", x="long")),
            _rec(n=_rec("N", x="string")),
            "FULL",
            "changes `n.x` from long to string",
        ),
        (
            _rec(n=["null", _rec("N", x="long")]),
            _rec(n=["null", _rec("N", x="string")]),
            "FULL",
            "changes `n.x` from long to string",
        ),
        (_rec(a="long"), _rec("Q", a="long"), "BACKWARD", "renames the record from R to Q"),
    ],
)
def test_wording_of_nested_enum_map_and_record_changes(
    old: dict[str, Any], new: dict[str, Any], level: str, line: str
) -> None:
    assert format_issues(check_compatibility("s-value", new, [old], level)) == [
        f"s-value: v2 {line}; {level} forbids it against v1"
    ]
