"""``raylane schema check|register|compat``: the contract compatibility gate on the command line.

``check`` compares the working tree's ``.avsc`` files with the registered history
and exits 1 naming subject, versions, field and rule when one breaks its
subject's compatibility level (``.ci/run`` runs it). ``register`` registers what
passes. The contracts are the platform's built-in ones plus the project's
(``--contracts``, default ``./contracts`` when it exists: ``schemas/`` and ``registry/``).
The registry is the project's (created as a copy of the built-in one on the first
``register``), else the committed built-in one, unless ``--registry`` names another
directory or ``--url`` a Confluent-compatible REST registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from raylane.contracts import ProjectContracts, SchemaRegistry, SubjectCheck

__all__ = ["register"]

_console = Console()
_err = Console(stderr=True)

RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="File registry directory (default: the committed one)."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Confluent Schema Registry REST URL instead of the file registry."),
]
SchemasOpt = Annotated[
    Path | None,
    typer.Option(
        "--schemas",
        help="One directory of .avsc contracts to take instead of the built-in and project ones.",
    ),
]
ContractsOpt = Annotated[
    Path | None,
    typer.Option(
        "--contracts",
        help="The project's contracts folder (schemas/ + registry/); default ./contracts "
        "when it exists, or $RAYLANE_CONTRACTS.",
    ),
]
NamesArg = Annotated[
    list[str] | None, typer.Argument(help="Contracts to take (default: every .avsc).")
]

_STYLE = {
    "registered": "green",
    "new subject": "cyan",
    "compatible": "yellow",
    "incompatible": "bold red",
    "stale": "bold red",
}


def _registry(
    path: Path | None,
    url: str | None,
    project: ProjectContracts | None = None,
    *,
    seed: bool = False,
) -> SchemaRegistry:
    """The registry the command line names: a file directory, a REST URL, the project's
    (created from the built-in one when `seed`), or the committed one."""
    from raylane.config import ConfluentRegistryConfig, FileRegistryConfig
    from raylane.contracts import open_registry

    if url:
        return open_registry(ConfluentRegistryConfig(type="confluent", url=url))
    if path is None and project is not None:
        if seed:
            path = project.seed_registry()
        elif (project.registry / "index.json").exists():
            path = project.registry
    return open_registry(FileRegistryConfig(path=str(path) if path else ""))


def _sources(
    schemas: Path | None, project: ProjectContracts | None, names: list[str] | None
) -> list[tuple[Path, list[str]]]:
    """(folder, contract names) to take: `--schemas` alone, else built-in + project ones."""
    from raylane.contracts import contract_names, contract_sources

    found = [(schemas, contract_names(schemas))] if schemas else contract_sources(project)
    if not names:
        return found
    known = {n for _, ns in found for n in ns}
    unknown = [n for n in names if n not in known]
    if unknown:
        from raylane.contracts import SchemaNotFound

        raise SchemaNotFound(f"no contract named {unknown}; known: {sorted(known)}")
    return [(d, [n for n in ns if n in names]) for d, ns in found]


def _table(checks: list[SubjectCheck]) -> Table:
    table = Table(title="schema check", title_justify="left")
    for col in ("subject", "level", "registered", "status"):
        table.add_column(col)
    for c in checks:
        vs = ", ".join(f"v{v}" for v in c.registered) or "-"
        table.add_row(c.subject, c.level, vs, f"[{_STYLE[c.status]}]{c.status}[/]")
    return table


def register(app: typer.Typer) -> None:
    """Add the ``schema`` command group to the root app."""
    from raylane.commands._common import friendly_errors

    schema_app = typer.Typer(
        help="Event contracts: compatibility check and registration.", no_args_is_help=True
    )
    app.add_typer(schema_app, name="schema")

    @schema_app.command("check")
    @friendly_errors
    def check(
        names: NamesArg = None,
        registry: RegistryOpt = None,
        url: UrlOpt = None,
        schemas: SchemasOpt = None,
        contracts: ContractsOpt = None,
        serve_configs: Annotated[
            Path, typer.Option(help="Pipeline configs whose ingresses declare what they read.")
        ] = Path("serve_configs"),
    ) -> None:
        """Compare the working tree's schemas with the registered history and with every
        consumer's declared fields; exit 1 if one breaks."""
        from raylane.contracts import (
            ProjectContracts,
            all_declarations,
            check_declarations,
            check_schemas,
            load_contract,
        )

        project = ProjectContracts.find(contracts)
        reg = _registry(registry, url, project)
        sources = _sources(schemas, project, names)
        checks = [c for d, ns in sources for c in check_schemas(reg, d, ns)]
        folder = {n: d for d, ns in sources for n in ns}
        _console.print(_table(checks))
        bad = [c.message for c in checks if not c.ok]
        for c in checks:
            if c.status in ("compatible", "new subject"):
                _console.print(c.message, highlight=False)
        pending = {
            c.subject: load_contract(c.contract, folder[c.contract])
            for c in checks
            if c.status in ("compatible", "new subject")
        }
        configs = sorted(serve_configs.glob("*.yaml")) if serve_configs.is_dir() else []
        decls = all_declarations(serve_configs=configs, registry=reg)
        violations = check_declarations(reg, decls, pending)
        _console.print(
            f"{len(decls)} consumer declarations checked ({', '.join(d.consumer for d in decls)})",
            highlight=False,
        )
        bad += [v.message for v in violations]
        for message in bad:
            _err.print(f"[bold red]error[/]: {message}", highlight=False)
        if bad:
            _err.print(
                "Fix the schema (new fields need a default; never change a field's type), "
                "or make a new topic for a breaking change.",
                highlight=False,
            )
            raise typer.Exit(1)

    @schema_app.command("register")
    @friendly_errors
    def register_(
        names: NamesArg = None,
        registry: RegistryOpt = None,
        url: UrlOpt = None,
        schemas: SchemasOpt = None,
        contracts: ContractsOpt = None,
    ) -> None:
        """Register the working tree's schemas (only those the compatibility level allows)."""
        from raylane.contracts import ProjectContracts, register_contracts

        project = ProjectContracts.find(contracts)
        reg = _registry(registry, url, project, seed=True)
        ids: dict[str, int] = {}
        for d, ns in _sources(schemas, project, names):
            ids |= register_contracts(reg, ns, d)
        for subject, sid in ids.items():
            _console.print(f"{subject}\tv{reg.latest(subject).version}\tid {sid}", highlight=False)

    @schema_app.command("compat")
    @friendly_errors
    def compat(
        subject: Annotated[str, typer.Argument(help="Subject, e.g. payments.initiated-value.")],
        level: Annotated[
            str | None, typer.Argument(help="New level; omit to print the current one.")
        ] = None,
        registry: RegistryOpt = None,
        url: UrlOpt = None,
        contracts: ContractsOpt = None,
    ) -> None:
        """Print or set a subject's compatibility level (BACKWARD, FULL_TRANSITIVE, NONE...)."""
        from raylane.contracts import ProjectContracts, subject_for

        project = ProjectContracts.find(contracts)
        reg = _registry(registry, url, project, seed=level is not None)
        subj = subject_for(subject)
        _console.print(reg.set_compatibility(subj, level) if level else reg.compatibility(subj))
