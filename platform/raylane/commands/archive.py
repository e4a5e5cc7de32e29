"""`raylane archive status [-f serve_configs/fraud.yaml]`: what the event archive holds."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from raylane.redaction import mask_url

__all__ = ["register"]


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


def register(app: typer.Typer) -> None:
    """Add the ``archive`` command group to the root app."""
    from raylane.commands._common import friendly_errors

    archive_app = typer.Typer(help="The event archive (Parquet via fsspec).", no_args_is_help=True)
    app.add_typer(archive_app, name="archive")

    @archive_app.command("status")
    @friendly_errors
    def status(
        config: Annotated[
            Path,
            typer.Option("--config", "-f", help="Serve config of the pipeline.", dir_okay=False),
        ] = Path("serve_configs/fraud.yaml"),
    ) -> None:
        """One row per archived topic: files, records, size, first and last record time."""
        from rich.console import Console
        from rich.table import Table

        from raylane.config import load_serve_config
        from raylane.settings import Settings
        from raylane.sinks.archive import archive_storage_options
        from raylane.sinks.archive_read import archive_root, archive_status

        console = Console()
        _, cfg = load_serve_config(config)
        if cfg.archive is None:
            console.print(
                f"pipeline [bold]{cfg.name}[/] has no archive section; add `archive:` to "
                f"{config} (docs/archive.md)"
            )
            raise typer.Exit(0)
        root = archive_root(cfg, Settings.load())
        rows = archive_status(
            root,
            [t.topic for t in cfg.archive.topics],
            storage_options=archive_storage_options(cfg.archive.storage_options_env),
        )
        state = "" if cfg.archive.enabled else " [yellow](disabled)[/]"
        table = Table(
            title=f"archive of {cfg.name} at {mask_url(root)}{state}", title_justify="left"
        )
        for col in ("topic", "files", "records", "size", "first (UTC)", "last (UTC)"):
            table.add_column(
                col, justify="right" if col in ("files", "records", "size") else "left"
            )
        for r in rows:
            table.add_row(
                r.topic,
                str(r.files),
                f"{r.records:,}",
                _size(r.bytes),
                _when(r.first),
                _when(r.last),
            )
        console.print(table)
        console.print(
            "[dim]records are counted per file: after a restart some are written twice "
            "(readers de-duplicate)[/]"
        )
