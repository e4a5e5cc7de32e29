"""Consumer-driven contracts: every consumer declares the fields it reads, per contract.

A declaration is one YAML file in ``contracts/consumers/`` (or any directory)::

    consumer: live-watcher          # who reads
    owner: raylane.monitoring.live  # where the reading code lives (free text)
    reads:
      payments.scored:              # contract (topic) name
        event_id: string            # field: the type the consumer reads it as
        model_version: string?      # `?`: null is fine
        features: map               # map / array / record / any: the kind only

Pipelines declare themselves: :func:`pipeline_reads` derives what a pipeline's
ingress reads from its config (key field, event features, window keys and values,
online entity fields, and every output field copied from the input).

:func:`check_declarations` checks each declaration against every registered
version of the contract's subject: the field must exist and the avro checker must
find the declared type readable from the registered one (long read as double is
fine; a ``["null", "string"]`` read as ``string`` is not). The same declarations
also become Pact message pacts (:mod:`raylane.contracts._pacts`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import avro.schema
import yaml
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from pydantic import ConfigDict, Field, ValidationError, field_validator

from raylane.config import Frozen
from raylane.contracts._builtin import subject_for
from raylane.contracts._registry import SchemaRegistry
from raylane.errors import ConfigError

if TYPE_CHECKING:
    from raylane.config import PipelineConfig

__all__ = [
    "COMPUTED_OUTPUT_FIELDS",
    "CONSUMERS_DIR",
    "ConsumerDeclaration",
    "DeclarationViolation",
    "all_declarations",
    "check_declarations",
    "load_declarations",
    "pipeline_reads",
]

#: Directory of the built-in consumer declarations.
CONSUMERS_DIR = Path(__file__).resolve().parent / "consumers"

#: Output fields the ingress computes (see ingest/processor.py, _build_outputs);
#: every other output field is copied from the input event.
COMPUTED_OUTPUT_FIELDS = frozenset(
    {
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
        "correlation_id",
    }
)

_PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_KINDS = {"map", "array", "record", "enum", "any"}


class ConsumerDeclaration(Frozen):
    """What one consumer reads: ``{contract: {field: type}}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consumer: str = Field(min_length=1, description="Name of the consumer, e.g. drift-monitor.")
    owner: str = Field(default="", description="Where the reading code lives (free text).")
    reads: dict[str, dict[str, str]] = Field(
        description="Contract name -> field -> type it is read as: an Avro primitive "
        "(string, double, long, ...), map/array/record/enum, or any; `?` allows null."
    )

    @field_validator("reads")
    @classmethod
    def _types(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for contract, fields in v.items():
            for name, t in fields.items():
                base = t.rstrip("?")
                if base not in _PRIMITIVE | _KINDS:
                    raise ValueError(
                        f"reads.{contract}.{name}: type {t!r} is not one of "
                        f"{sorted(_PRIMITIVE | _KINDS)} (add `?` to allow null)"
                    )
        return v


@dataclass(frozen=True, slots=True)
class DeclarationViolation:
    consumer: str
    contract: str
    subject: str
    version: int
    field: str
    declared: str
    found: str  # the registered type, or "" when the field is missing

    @property
    def message(self) -> str:
        where = f"{self.subject} v{self.version}"
        if not self.found:
            return (
                f"consumer {self.consumer} reads `{self.field}` ({self.declared}) from "
                f"{self.contract}, but {where} has no such field"
            )
        return (
            f"consumer {self.consumer} reads `{self.field}` as {self.declared} from "
            f"{self.contract}, but {where} has it as {self.found}"
        )


def load_declarations(directory: Path = CONSUMERS_DIR) -> list[ConsumerDeclaration]:
    """Every ``*.yaml`` declaration in `directory`; errors name the file and the key."""
    out = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            out.append(ConsumerDeclaration.model_validate(yaml.safe_load(path.read_text())))
        except ValidationError as e:
            why = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"{path}: invalid consumer declaration: {why}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return out


def _avro_type(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_avro_type(b) for b in t)
    if isinstance(t, Mapping):
        kind = t.get("type")
        return kind if isinstance(kind, str) and kind not in _PRIMITIVE else _avro_type(kind)
    return str(t)


def _field_type_kind(t: Any) -> str:
    return t.get("type", "") if isinstance(t, Mapping) else str(t)


def _readable(declared: str, field_type: Any) -> bool:
    """Can a consumer read a value of the registered `field_type` as `declared`?"""
    nullable = declared.endswith("?")
    base = declared.rstrip("?")
    branches = field_type if isinstance(field_type, list) else [field_type]
    if not nullable and "null" in branches:
        return False
    branches = [b for b in branches if b != "null"]
    if base == "any":
        return True
    if base in _KINDS:
        return all(_field_type_kind(b) == base for b in branches)
    reader_json: Any = ["null", base] if nullable else base
    reader = avro.schema.parse(json.dumps(reader_json))
    # the writer: the field's own type, with time logical types read as their base type
    record = avro.schema.parse(
        json.dumps({"type": "record", "name": "W", "fields": [{"name": "f", "type": field_type}]})
    )
    assert isinstance(record, avro.schema.RecordSchema)
    writer = record.fields[0].type
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    return result.compatibility is not SchemaCompatibilityType.incompatible


def check_declarations(
    registry: SchemaRegistry,
    declarations: Iterable[ConsumerDeclaration],
    pending: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[DeclarationViolation]:
    """Violations of any declaration by any registered version of the contracts it reads.

    `pending` maps a subject to a schema not registered yet (what ``raylane schema check``
    would register); it is checked as the subject's next version.
    """
    pending = pending or {}
    out: list[DeclarationViolation] = []
    for decl in declarations:
        for contract, fields in decl.reads.items():
            subject = subject_for(contract)
            schemas: list[tuple[int, Any]] = [
                (v, json.loads(registry.get_version(subject, v).text))
                for v in registry.versions(subject)
            ]
            if subject in pending:
                schemas.append(((schemas[-1][0] if schemas else 0) + 1, pending[subject]))
            if not schemas:
                out.append(
                    DeclarationViolation(
                        decl.consumer, contract, subject, 0, "*", "a registered schema", ""
                    )
                )
                continue
            for v, schema in schemas:
                by_name = {f["name"]: f for f in schema.get("fields", [])}
                for name, declared in fields.items():
                    f = by_name.get(name)
                    if f is None:
                        out.append(
                            DeclarationViolation(
                                decl.consumer, contract, subject, v, name, declared, ""
                            )
                        )
                    elif not _readable(declared, f["type"]):
                        out.append(
                            DeclarationViolation(
                                decl.consumer,
                                contract,
                                subject,
                                v,
                                name,
                                declared,
                                _avro_type(f["type"]),
                            )
                        )
    return out


def all_declarations(
    directory: Path = CONSUMERS_DIR,
    serve_configs: Iterable[Path] = (),
    registry: SchemaRegistry | None = None,
) -> list[ConsumerDeclaration]:
    """The declaration files plus one derived declaration per pipeline config file."""
    from raylane.config import load_serve_config

    decls = load_declarations(directory)
    decls += [pipeline_reads(load_serve_config(p)[1], registry) for p in serve_configs]
    return decls


def pipeline_reads(
    cfg: PipelineConfig, registry: SchemaRegistry | None = None
) -> ConsumerDeclaration:
    """What the ingress of pipeline `cfg` reads from its input contract, derived from the config."""
    from raylane.contracts._registry import FileSchemaRegistry

    reads: dict[str, str] = {"event_id": "string", cfg.input.key_field: "any"}
    for f in cfg.features.event:
        reads[f] = "double?"  # a missing value becomes NaN
    et = cfg.input.event_time
    if cfg.features.windows:
        reads[et.field] = "long" if et.unit == "ms" else "any"
    for c in cfg.features.categorical:
        reads.setdefault(c.field, "any?")  # a missing value is the unknown category
    for w in cfg.features.windows:
        for k in w.key_fields:
            reads.setdefault(k, "any")
        if w.value_field:
            reads[w.value_field] = "double"
    for view in cfg.features.online:
        reads.setdefault(view.entity_field, "any")
    # every output field the ingress does not compute is copied from the input event
    reg = registry if registry is not None else FileSchemaRegistry()
    outs = [cfg.outputs.scored] + [r.publish for r in cfg.decision.rules if r.publish is not None]
    filled: dict[str, set[str]] = {}
    for out in outs:
        filled.setdefault(out.contract, set()).update(out.fields)
        for src in out.fields.values():
            if src.startswith("input."):
                reads.setdefault(src[len("input.") :], "any?")
            elif src == "event_time":
                reads.setdefault(et.field, "any")
    for contract in sorted(filled):
        for f in json.loads(reg.latest(subject_for(contract)).text)["fields"]:
            name = f["name"]
            if name in COMPUTED_OUTPUT_FIELDS or name in reads or name in filled[contract]:
                continue
            t = f["type"]
            nullable = isinstance(t, list) and "null" in t
            kind = next(b for b in t if b != "null") if isinstance(t, list) else t
            base = kind if isinstance(kind, str) else kind.get("type", "any")
            if base not in _PRIMITIVE | _KINDS:
                base = "any"
            reads[name] = base + ("?" if nullable else "")
    return ConsumerDeclaration(
        consumer=f"ingress:{cfg.name}",
        owner="raylane.ingest (derived from the pipeline config)",
        reads={cfg.input.contract: reads},
    )
