"""The compatibility gate: working-tree ``.avsc`` files against a registry's history.

:func:`check_schemas` is what ``raylane schema check`` (and ``.ci/run``) runs: for
every contract it says whether the file is already registered, is a compatible new
version waiting for ``raylane schema register``, or breaks the subject's
compatibility level (with the field, the versions and the rule).
:func:`register_checked` registers only what passes, for any backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raylane.contracts._builtin import SCHEMAS_DIR, contract_names, load_contract, subject_for
from raylane.contracts._compat import (
    CompatibilityIssue,
    IncompatibleSchema,
    check_compatibility,
    format_issues,
)
from raylane.contracts._registry import RegisteredSchema, SchemaRegistry

__all__ = ["SubjectCheck", "check_schema", "check_schemas", "history", "register_checked"]

Status = Literal["registered", "new subject", "compatible", "incompatible", "stale"]


@dataclass(frozen=True)
class SubjectCheck:
    """The verdict for one contract file against its subject's registered history."""

    contract: str
    subject: str
    status: Status
    level: str
    registered: list[int] = field(default_factory=list)  # registered version numbers
    matches: int | None = None  # the registered version identical to the file, if any
    issues: list[CompatibilityIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("registered", "new subject", "compatible")

    @property
    def message(self) -> str:
        latest = self.registered[-1] if self.registered else None
        if self.status == "registered":
            return f"{self.subject}: unchanged (v{self.matches}, {self.level})"
        if self.status == "new subject":
            return f"{self.subject}: new subject; `raylane schema register` makes it v1"
        if self.status == "compatible":
            return (
                f"{self.subject}: v{(latest or 0) + 1} is {self.level}-compatible with "
                f"v{latest}; `raylane schema register` registers it"
            )
        if self.status == "stale":
            return (
                f"{self.subject}: the file equals v{self.matches}, but the latest is "
                f"v{latest}; restore the latest schema or register a new version"
            )
        return "\n".join(format_issues(self.issues))


def _canon(schema: str | Mapping[str, Any]) -> str:
    obj = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def history(registry: SchemaRegistry, subject: str) -> list[RegisteredSchema]:
    """Every registered version of `subject`, oldest first (empty when unknown)."""
    return [registry.get_version(subject, v) for v in registry.versions(subject)]


def check_schema(
    registry: SchemaRegistry, subject: str, schema: Mapping[str, Any], contract: str = ""
) -> SubjectCheck:
    """The verdict for `schema` as the next version of `subject`."""
    level = registry.compatibility(subject)
    hist = history(registry, subject)
    versions = [h.version for h in hist]
    canon = _canon(schema)
    for h in hist:
        if _canon(h.text) == canon:
            status: Status = "registered" if h.version == versions[-1] else "stale"
            return SubjectCheck(contract, subject, status, level, versions, h.version)
    if not hist:
        return SubjectCheck(contract, subject, "new subject", level)
    issues = check_compatibility(subject, schema, [h.text for h in hist], level, versions=versions)
    status = "incompatible" if issues else "compatible"
    return SubjectCheck(contract, subject, status, level, versions, None, issues)


def check_schemas(
    registry: SchemaRegistry,
    directory: Path = SCHEMAS_DIR,
    names: Iterable[str] | None = None,
) -> list[SubjectCheck]:
    """Check every contract file in `directory` (or `names`) against `registry`."""
    return [
        check_schema(registry, subject_for(n), load_contract(n, directory), n)
        for n in (names if names is not None else contract_names(directory))
    ]


def register_checked(
    registry: SchemaRegistry, subject: str, schema: str | Mapping[str, Any]
) -> int:
    """Register `schema` under `subject` if the subject's compatibility level allows it.

    Raises :class:`IncompatibleSchema` naming subject, versions, field and rule;
    nothing is registered then. Idempotent for a schema already registered.
    """
    obj = json.loads(schema) if isinstance(schema, str) else schema
    verdict = check_schema(registry, subject, obj)
    if verdict.status == "incompatible":
        raise IncompatibleSchema(verdict.message, verdict.issues)
    return registry.register(subject, obj)
