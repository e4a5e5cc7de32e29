"""`raylane drift status <pipeline>`: the drift state the monitor keeps in Redis."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from raylane.redaction import mask_url

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    from raylane.commands._common import friendly_errors

    drift_app = typer.Typer(
        help="Drift of a pipeline's scored stream (Evidently).", no_args_is_help=True
    )

    @drift_app.command("status")
    @friendly_errors
    def status(
        pipeline: Annotated[str, typer.Argument(help="Pipeline name, e.g. fraud.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the raw state JSON.")] = False,
    ) -> None:
        """Show whether a drift alert is open and what the latest window looked like."""
        from dataclasses import asdict

        from rich.console import Console
        from rich.table import Table

        from raylane.monitoring.drift_state import drift_key, read_state
        from raylane.settings import Settings

        console = Console()
        settings = Settings.load()
        state = read_state(settings.redis_url, pipeline)
        if state is None:
            console.print(
                f"no drift state for pipeline [bold]{pipeline}[/] at {drift_key(pipeline)} "
                f"({mask_url(settings.redis_url)}): the drift monitor has not evaluated a "
                "window yet; "
                f"start the app (`serve run serve_configs/{pipeline}.yaml`) and send traffic"
            )
            raise typer.Exit(0)
        if as_json:
            console.print_json(json.dumps(asdict(state)))
            return
        verdict = "[bold red]OPEN[/]" if state.open else "[green]clear[/]"
        table = Table(
            title=f"drift of {pipeline}: {verdict}", title_justify="left", show_header=False
        )
        table.add_column("field", style="dim")
        table.add_column("value")
        table.add_row("model", f"{state.model_name} v{state.model_version}")
        table.add_row("drift share", f"{state.drift_share:.2f} (threshold {state.threshold:.2f})")
        table.add_row("drifted columns", ", ".join(state.drifted_columns) or "-")
        table.add_row("window end", state.window_end)
        table.add_row("updated", state.updated_at)
        console.print(table)

    app.add_typer(drift_app, name="drift")
