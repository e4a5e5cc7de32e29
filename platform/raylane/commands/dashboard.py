"""``raylane dashboard``: the web dashboard of a running pipeline (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    from raylane.commands._common import console, friendly_errors

    @app.command("dashboard")
    @friendly_errors
    def dashboard_cmd(
        config: Annotated[
            Path,
            typer.Option("--config", "-f", help="Serve config of the pipeline.", dir_okay=False),
        ] = Path("serve_configs/fraud.yaml"),
        host: Annotated[
            str, typer.Option(help="Address to listen on; beyond loopback a token is required.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8350,
        token: Annotated[
            str | None,
            typer.Option(
                help="Required on every request ($RAYLANE_DASHBOARD_TOKEN); needed beyond "
                "loopback.",
                envvar="RAYLANE_DASHBOARD_TOKEN",
                show_envvar=False,
            ),
        ] = None,
        prometheus: Annotated[
            str | None,
            typer.Option(
                help="Prometheus server URL to read metrics from ($RAYLANE_PROMETHEUS_URL); "
                "default: the replicas' file_sd targets on this machine.",
            ),
        ] = None,
        refresh: Annotated[
            float, typer.Option(help="Seconds between page refreshes.", min=1)
        ] = 5.0,
    ) -> None:
        """Shadow vs primary, pipeline health, drift, actions and models, refreshing itself."""
        from raylane.config import load_serve_config
        from raylane.dashboard import DashboardServer, check_bind, open_dashboard

        check_bind(host, token)  # before reading anything
        _, cfg = load_serve_config(config)
        server = DashboardServer(
            open_dashboard(cfg, prometheus_url=prometheus),
            host=host,
            port=port,
            token=token,
            refresh_s=refresh,
        )
        shown = f"http://{host}:{port}/" + ("?token=<token>" if server.token else "")
        console.print(
            f"[bold]raylane dashboard[/] of {cfg.name}: {shown}  (Ctrl-C stops)", highlight=False
        )
        server.run()
