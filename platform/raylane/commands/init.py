"""``raylane init NAME``: scaffold a working use case into the current project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``init`` command to the root app."""
    from raylane.commands._common import console, friendly_errors

    @app.command("init")
    @friendly_errors
    def init(
        name: Annotated[str, typer.Argument(help="Use case name (lower case, e.g. orders).")],
        flavor: Annotated[
            Literal["sklearn", "xgboost"],
            typer.Option(help="MLflow flavor of the primary model; the shadow gets the other."),
        ] = "sklearn",
        root: Annotated[Path, typer.Option(help="Project root to write into.")] = Path("."),
        contracts: Annotated[
            Path, typer.Option(help="The project's contracts folder (relative to the root).")
        ] = Path("contracts"),
        force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
    ) -> None:
        """Write a working use case: serve config, contracts, Feast view + source,
        models/NAME/ (prepare, train, synthetic data, producer)."""
        from raylane.scaffold import init_usecase

        s = init_usecase(name, root=root, flavor=flavor, contracts=contracts, force=force)
        for path in s.written:
            console.print(f"[green]✓[/] {path.relative_to(s.root)}", highlight=False)
        for subject, sid in s.registered.items():
            console.print(f"[green]✓[/] registered {subject} (id {sid})", highlight=False)
        cfg = s.config.relative_to(s.root)
        console.print(
            f"next: [bold]raylane bootstrap -f {cfg}[/], then [bold]serve run {cfg}[/], then "
            f"[bold]python models/{name}/produce.py[/] (see docs/your-own-use-case.md)",
            highlight=False,
        )
