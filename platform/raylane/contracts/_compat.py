"""Schema compatibility per subject, computed by the ``avro`` package's checker.

The verdict (compatible or not) is :class:`avro.compatibility.ReaderWriterCompatibilityChecker`'s,
for the reader/writer pairs each level implies (Confluent semantics):

==================== =================================================================
BACKWARD             the new schema reads data written with the latest version
BACKWARD_TRANSITIVE  the new schema reads data written with every earlier version
FORWARD              the latest version reads data written with the new schema
FORWARD_TRANSITIVE   every earlier version reads data written with the new schema
FULL                 BACKWARD and FORWARD
FULL_TRANSITIVE      BACKWARD_TRANSITIVE and FORWARD_TRANSITIVE
NONE                 no check
==================== =================================================================

What is hand-written here is only the wording: the checker's locations
(``/fields/5/type``) are turned into field names and old -> new types, so a
failure reads "v3 changes `amount` from double to string; BACKWARD_TRANSITIVE
forbids it against v1, v2".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

from raylane.contracts._errors import InvalidSchema, SchemaRegistryError

__all__ = [
    "COMPATIBILITY_LEVELS",
    "DEFAULT_COMPATIBILITY",
    "Compatibility",
    "CompatibilityIssue",
    "IncompatibleSchema",
    "check_compatibility",
    "format_issues",
]

Compatibility = Literal[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]
COMPATIBILITY_LEVELS: tuple[str, ...] = get_args(Compatibility)
DEFAULT_COMPATIBILITY: Compatibility = "BACKWARD"


class IncompatibleSchema(SchemaRegistryError):
    """A schema breaks its subject's compatibility rule; the message names field, versions, rule."""

    def __init__(self, message: str, issues: Sequence[CompatibilityIssue] = ()) -> None:
        super().__init__(message)
        self.issues = list(issues)


@dataclass(frozen=True, slots=True)
class CompatibilityIssue:
    """One reason a new schema breaks the rule against one registered version."""

    subject: str
    new_version: int
    against: int  # the registered version it breaks against
    field: str  # top-level field path, "" for the record itself
    change: str  # "changes `amount` from double to string"
    direction: Literal["backward", "forward"]  # which reader fails
    level: str
    detail: str  # the avro checker's own message and location


def _avro(schema: str | Mapping[str, Any]) -> avro.schema.Schema:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError, TypeError) as e:
        raise InvalidSchema(f"schema is not valid Avro: {e}") from e


def _json(schema: str | Mapping[str, Any]) -> Any:
    return json.loads(schema) if isinstance(schema, str) else schema


def _pairs(level: str, n_old: int) -> list[tuple[int, Literal["backward", "forward"]]]:
    """(index into the old versions, direction) pairs the level requires."""
    if level not in COMPATIBILITY_LEVELS:
        raise InvalidSchema(f"compatibility {level!r} is not one of {list(COMPATIBILITY_LEVELS)}")
    if level == "NONE" or n_old == 0:
        return []
    olds = list(range(n_old)) if level.endswith("_TRANSITIVE") else [n_old - 1]
    dirs: list[Literal["backward", "forward"]] = []
    if level.startswith(("BACKWARD", "FULL")):
        dirs.append("backward")
    if level.startswith(("FORWARD", "FULL")):
        dirs.append("forward")
    return [(i, d) for i in olds for d in dirs]


def _type_name(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_type_name(b) for b in t)
    if isinstance(t, Mapping):
        kind = t.get("type")
        if kind in ("record", "enum", "fixed"):
            return f"{kind} {t.get('name')}"
        if kind == "array":
            return f"array of {_type_name(t.get('items'))}"
        if kind == "map":
            return f"map of {_type_name(t.get('values'))}"
        logical = t.get("logicalType")
        return f"{kind} ({logical})" if logical else _type_name(kind)
    return str(t)


def _record_of(t: Any) -> Any:
    """The record schema inside a field type (itself, or a union's record branch)."""
    if isinstance(t, Mapping) and t.get("type") in ("record", "error"):
        return t
    if isinstance(t, list):
        for b in t:
            if isinstance(b, Mapping) and b.get("type") in ("record", "error"):
                return b
    return None


def _field_at(reader: Any, location: str) -> str:
    """Dotted field path of a checker location: ``fields/2/type/fields/0/type`` -> ``n.x``."""
    parts = [p for p in location.split("/") if p]
    path: list[str] = []
    node = reader
    i = 0
    while i + 1 < len(parts) and parts[i] == "fields" and parts[i + 1].isdigit():
        fields = node.get("fields", []) if isinstance(node, Mapping) else []
        k = int(parts[i + 1])
        if k >= len(fields):
            break
        path.append(str(fields[k]["name"]))
        node = _record_of(fields[k]["type"])
        i += 3 if i + 2 < len(parts) and parts[i + 2] == "type" else 2
        if node is None:
            break
    return ".".join(path)


def _field(schema: Any, path: str) -> Any:
    """The field dict at dotted `path` in a record schema, or None."""
    node = schema
    found = None
    for name in path.split("."):
        if node is None:
            return None
        found = {f["name"]: f for f in node.get("fields", [])}.get(name)
        if found is None:
            return None
        node = _record_of(found["type"])
    return found


def _avro_record(t: avro.schema.Schema) -> avro.schema.RecordSchema | None:
    if isinstance(t, avro.schema.RecordSchema):
        return t
    if isinstance(t, avro.schema.UnionSchema):
        return next((b for b in t.schemas if isinstance(b, avro.schema.RecordSchema)), None)
    return None


def _localize(
    reader: avro.schema.Schema, writer: avro.schema.Schema, prefix: str = ""
) -> list[str]:
    """Fields of `reader` the checker finds unreadable from `writer`, asked one by one
    (and inside nested records), for when its own locations stop at a union."""
    r_rec, w_rec = _avro_record(reader), _avro_record(writer)
    if r_rec is None or w_rec is None:
        return [prefix.rstrip(".")]
    bad: list[str] = []
    for f in r_rec.fields:
        w = w_rec.fields_dict.get(f.name)
        if w is None:
            if not f.has_default:
                bad.append(prefix + f.name)
            continue
        r = ReaderWriterCompatibilityChecker().get_compatibility(f.type, w.type)
        if r.compatibility is SchemaCompatibilityType.incompatible:
            inner = _avro_record(f.type) is not None and _avro_record(w.type) is not None
            bad += _localize(f.type, w.type, f"{prefix}{f.name}.") if inner else [prefix + f.name]
    return bad or [prefix.rstrip(".")]


def _enum_of(t: Any) -> Any:
    branches = t if isinstance(t, list) else [t]
    return next((b for b in branches if isinstance(b, Mapping) and b.get("type") == "enum"), None)


def _change(field: str, old: Any, new: Any, kind: str) -> str:
    """Words for what the new schema does to `field` relative to the old one."""
    if not field:
        if old.get("name") != new.get("name"):
            return f"renames the record from {old.get('name')} to {new.get('name')}"
        return f"changes the record ({kind})"
    old_f, new_f = _field(old, field), _field(new, field)
    if old_f is None and new_f is not None:
        return f"adds `{field}` ({_type_name(new_f['type'])}) without a default"
    if new_f is None and old_f is not None:
        return f"removes `{field}`, which older readers need (it has no default there)"
    if old_f is None or new_f is None:
        return f"changes `{field}` ({kind})"
    old_e, new_e = _enum_of(old_f["type"]), _enum_of(new_f["type"])
    if old_e is not None and new_e is not None:
        gone = [x for x in old_e.get("symbols", []) if x not in new_e.get("symbols", [])]
        added = [x for x in new_e.get("symbols", []) if x not in old_e.get("symbols", [])]
        if gone:
            return f"removes symbols {gone} from enum `{field}`"
        if added:
            return f"adds symbols {added} to enum `{field}` (old readers cannot read them)"
    if old_f["type"] != new_f["type"]:
        return f"changes `{field}` from {_type_name(old_f['type'])} to {_type_name(new_f['type'])}"
    if kind == SchemaIncompatibilityType.reader_field_missing_default_value.value:
        return f"changes the default of `{field}`"
    return f"changes `{field}` ({kind})"


def check_compatibility(
    subject: str,
    new: str | Mapping[str, Any],
    history: Sequence[str | Mapping[str, Any]],
    level: str = DEFAULT_COMPATIBILITY,
    *,
    versions: Sequence[int] | None = None,
    new_version: int | None = None,
) -> list[CompatibilityIssue]:
    """Why `new` breaks `level` against the registered `history` (oldest first); [] if it does not.

    `versions` are the registered version numbers of `history` (default 1..n);
    `new_version` is what the new schema would become (default last + 1).
    """
    vers = list(versions) if versions is not None else list(range(1, len(history) + 1))
    nv = new_version if new_version is not None else (vers[-1] + 1 if vers else 1)
    new_avro, new_json = _avro(new), _json(new)
    issues: list[CompatibilityIssue] = []
    for i, direction in _pairs(level, len(history)):
        old_avro, old_json = _avro(history[i]), _json(history[i])
        reader, writer = (new_avro, old_avro) if direction == "backward" else (old_avro, new_avro)
        reader_json = new_json if direction == "backward" else old_json
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
        if result.compatibility is not SchemaCompatibilityType.incompatible:
            continue
        kinds = sorted({k.value for k in result.incompatibilities})
        detail = "; ".join(sorted(result.messages)) + f" at {', '.join(sorted(result.locations))}"
        # "/" is the checker's default location (merged in from compatible sub-results, and
        # all it reports below a writer union); then ask it about each field on its own
        locations = {loc for loc in result.locations if loc.strip("/")}
        deep = _localize(reader, writer)
        fields = (
            sorted(
                {
                    path
                    for loc in locations
                    for top in [_field_at(reader_json, loc)]
                    for path in ([d for d in deep if d.startswith(top + ".")] or [top])
                }
            )
            or deep
        )
        for field in fields:
            issues.append(
                CompatibilityIssue(
                    subject=subject,
                    new_version=nv,
                    against=vers[i],
                    field=field,
                    change=_change(field, old_json, new_json, kinds[0]),
                    direction=direction,
                    level=level,
                    detail=detail,
                )
            )
    return issues


def format_issues(issues: Sequence[CompatibilityIssue]) -> list[str]:
    """One line per distinct change.

    Shaped "<subject>: v3 changes `amount` ...; <LEVEL> forbids it against v1, v2".
    """
    grouped: dict[tuple[str, int, str, str], list[int]] = {}
    for it in issues:
        key = (it.subject, it.new_version, it.change, it.level)
        against = grouped.setdefault(key, [])
        if it.against not in against:
            against.append(it.against)
    lines = []
    for (subject, nv, change, level), against in grouped.items():
        vs = ", ".join(f"v{v}" for v in sorted(against))
        lines.append(f"{subject}: v{nv} {change}; {level} forbids it against {vs}")
    return lines
