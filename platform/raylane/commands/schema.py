"""``raylane schema check|register|compat``: the contract compatibility gate on the command line.

``check`` compares the working tree's ``.avsc`` files with the registered history
and exits 1 naming subject, versions, field and rule when one breaks its
subject's compatibility level (``.ci/run`` runs it). ``register`` registers what
passes. The registry is the committed file registry unless ``--registry`` names
another directory or ``--url`` a Confluent-compatible REST registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from raylane.contracts import SchemaRegistry, SubjectCheck

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
    typer.Option("--schemas", help="Directory of .avsc contracts (default: the package's)."),
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


def _registry(path: Path | None, url: str | None) -> SchemaRegistry:
    """The registry the command line names: a file directory, a REST URL, or the committed one."""
    from raylane.config import ConfluentRegistryConfig, FileRegistryConfig
    from raylane.contracts import open_registry

    if url:
        return open_registry(ConfluentRegistryConfig(type="confluent", url=url))
    return open_registry(FileRegistryConfig(path=str(path) if path else ""))


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
        serve_configs: Annotated[
            Path, typer.Option(help="Pipeline configs whose ingresses declare what they read.")
        ] = Path("serve_configs"),
    ) -> None:
        """Compare the working tree's schemas with the registered history and with every
        consumer's declared fields; exit 1 if one breaks."""
        from raylane.contracts import (
            SCHEMAS_DIR,
            all_declarations,
            check_declarations,
            check_schemas,
            load_contract,
        )

        reg = _registry(registry, url)
        directory = schemas or SCHEMAS_DIR
        checks = check_schemas(reg, directory, names or None)
        _console.print(_table(checks))
        bad = [c.message for c in checks if not c.ok]
        for c in checks:
            if c.status in ("compatible", "new subject"):
                _console.print(c.message, highlight=False)
        pending = {
            c.subject: load_contract(c.contract, directory)
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
    ) -> None:
        """Register the working tree's schemas (only those the compatibility level allows)."""
        from raylane.contracts import SCHEMAS_DIR, register_contracts

        reg = _registry(registry, url)
        ids = register_contracts(reg, names or None, schemas or SCHEMAS_DIR)
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
    ) -> None:
        """Print or set a subject's compatibility level (BACKWARD, FULL_TRANSITIVE, NONE...)."""
        from raylane.contracts import subject_for

        reg = _registry(registry, url)
        subj = subject_for(subject)
        _console.print(reg.set_compatibility(subj, level) if level else reg.compatibility(subj))
