"""Contracts in the user's project, beside the platform's built-in ones.

A project keeps its own contracts in a folder (default ``contracts/`` at the project root,
or ``$RAYLANE_CONTRACTS``): ``schemas/<contract>.avsc`` and a file registry in
``registry/``. The platform's contracts (``model.drift``, ``models.promoted``, the shadow
comparisons, the examples) stay package data; the project registry starts as a copy of
the built-in one (same subjects, versions and ids), so one registry serves every contract a
project's pipelines read or write, and its config names it:
``schema_registry: contracts/registry``. ``raylane schema check|register`` cover both
folders.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from raylane.contracts._builtin import SCHEMAS_DIR, contract_names
from raylane.contracts._errors import SchemaRegistryError
from raylane.contracts._registry import BUILTIN_REGISTRY_DIR

__all__ = ["DEFAULT_CONTRACTS_DIR", "ProjectContracts", "contract_sources"]

#: The project's contracts folder, relative to the project root (or ``$RAYLANE_CONTRACTS``).
DEFAULT_CONTRACTS_DIR = "contracts"


@dataclass(frozen=True)
class ProjectContracts:
    """A project's contracts folder: ``schemas/`` and the file registry ``registry/``."""

    root: Path

    @classmethod
    def find(cls, path: str | os.PathLike[str] | None = None) -> ProjectContracts | None:
        """`path`, else ``$RAYLANE_CONTRACTS``, else ``./contracts``; None when the
        folder (default one) does not exist."""
        explicit = path or os.environ.get("RAYLANE_CONTRACTS")
        root = Path(explicit or DEFAULT_CONTRACTS_DIR).resolve()
        if explicit or root.is_dir():
            return cls(root)
        return None

    @property
    def schemas(self) -> Path:
        return self.root / "schemas"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    def seed_registry(self) -> Path:
        """Create the project registry as a copy of the built-in one if it has none yet.

        Copying keeps the built-in contracts' ids, so events already encoded with them
        decode the same through either registry. Returns the registry directory.
        """
        index = self.registry / "index.json"
        if not index.exists():
            self.registry.mkdir(parents=True, exist_ok=True)
            for f in sorted(BUILTIN_REGISTRY_DIR.glob("*.json")):
                if f.name != "index.json":
                    shutil.copy2(f, self.registry / f.name)
            shutil.copy2(BUILTIN_REGISTRY_DIR / "index.json", index)  # last: marks it complete
        return self.registry


def contract_sources(project: ProjectContracts | None) -> list[tuple[Path, list[str]]]:
    """(schemas folder, contract names) for the built-in contracts, then the project's.

    Raises SchemaRegistryError when the project redefines a built-in contract (one name
    would have two schemas).
    """
    builtin = contract_names(SCHEMAS_DIR)
    out = [(SCHEMAS_DIR, builtin)]
    if project is not None and project.schemas.is_dir():
        own = contract_names(project.schemas)
        clash = sorted(set(own) & set(builtin))
        if clash:
            raise SchemaRegistryError(
                f"{project.schemas} redefines the built-in contract(s) {clash}; give the "
                "project's contracts their own names (a contract is named like its topic)"
            )
        out.append((project.schemas, own))
    return out
