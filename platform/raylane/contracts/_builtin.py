"""The contracts shipped with raylane: ``schemas/<contract>.avsc`` and their registration.

A contract is named like its topic (``payments.initiated``); its registry subject
is ``<contract>-value`` (TopicNameStrategy). A use case's own contracts do not go here:
they live in the project's ``contracts/`` folder (see :mod:`raylane.contracts._project`).

``python -m raylane.contracts [REGISTRY_DIR]`` registers every ``.avsc``
into a registry (default: the committed one) and prints the subjects and ids;
it is idempotent, so running it on an up-to-date registry changes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raylane.contracts._errors import SchemaNotFound
from raylane.contracts._registry import FileSchemaRegistry, SchemaRegistry

__all__ = ["SCHEMAS_DIR", "contract_names", "load_contract", "register_contracts", "subject_for"]

#: Directory of the built-in ``.avsc`` contracts.
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"

#: Registration order of the first registration, so that global ids are stable.
_FIRST_ORDER = (
    "payments.initiated",
    "payments.scored",
    "payments.flagged",
    "fraud.shadow",
    "churn.activity",
    "churn-risk-scored",
)


def subject_for(contract: str) -> str:
    """Registry subject of a contract/topic name (TopicNameStrategy): ``<contract>-value``."""
    return contract if contract.endswith("-value") else f"{contract}-value"


def contract_names(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Names of the contracts in `directory`, in stable registration order."""
    names = {p.name[: -len(".avsc")] for p in directory.glob("*.avsc")}
    first = [n for n in _FIRST_ORDER if n in names]
    return first + sorted(names - set(first))


def load_contract(name: str, directory: Path = SCHEMAS_DIR) -> dict[str, Any]:
    """The JSON of contract `name` (``<directory>/<name>.avsc``), unparsed."""
    path = directory / f"{name}.avsc"
    if not path.is_file():
        raise SchemaNotFound(
            f"contract {name} has no schema file {path}; known contracts: "
            f"{contract_names(directory)}"
        )
    obj: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return obj


def register_contracts(
    registry: SchemaRegistry | None = None,
    names: Iterable[str] | None = None,
    directory: Path = SCHEMAS_DIR,
) -> dict[str, int]:
    """Register contracts (default: all in `directory`) under ``<name>-value``.

    Returns ``{subject: schema_id}``. Idempotent: unchanged contracts keep their ids;
    an edited ``.avsc`` becomes a new version of its subject if the subject's
    compatibility level allows it (else :class:`IncompatibleSchema`, and the
    contracts after it are not registered).
    """
    from raylane.contracts._gate import register_checked  # the gate imports this module

    reg = registry if registry is not None else FileSchemaRegistry()
    out: dict[str, int] = {}
    for name in names if names is not None else contract_names(directory):
        subject = subject_for(name)
        out[subject] = register_checked(reg, subject, load_contract(name, directory))
    return out


def main(argv: list[str] | None = None) -> int:
    """Register every built-in contract into a registry and print subject, version, id."""
    args = sys.argv[1:] if argv is None else argv
    registry = FileSchemaRegistry(args[0] if args else None)
    for subject, schema_id in register_contracts(registry).items():
        print(f"{subject}\tversion {registry.latest(subject).version}\tid {schema_id}")
    return 0
