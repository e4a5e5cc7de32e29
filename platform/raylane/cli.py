"""The ``raylane`` command line: parses arguments, calls the packages, prints with rich.

Commands stay thin: each one delegates to a package function and renders its result.
The stack, bootstrap and demo commands are here; every other group lives in its own module
under :mod:`raylane.commands` (a ``register(app)`` function per module, found at start-up).
Errors raylane raises on purpose (`RaylaneError`) are printed without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
from rich.console import Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from raylane.commands import register_all
from raylane.commands._common import console, friendly_errors
from raylane.redaction import mask_url

__all__ = ["app"]

app = typer.Typer(
    name="raylane",
    help="Real-time inference and feature platform on Ray.",
    no_args_is_help=True,
    add_completion=False,
)
dev_app = typer.Typer(
    help="The embedded dev stack: Kafka (Tansu), Redis (or valkey), MLflow.",
    no_args_is_help=True,
)
app.add_typer(dev_app, name="dev")


def _status_table(rows: list[Any]) -> Table:
    table = Table(title="raylane dev stack", title_justify="left")
    for col in ("component", "address", "pid", "healthy", "owner", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.component,
            mask_url(r.address),
            str(r.pid) if r.pid else "-",
            "[green]yes[/]" if r.healthy else "[red]no[/]",
            "ours" if r.owned else ("external" if r.healthy else "-"),
            r.detail,
        )
    return table


class _Progress:
    """A live spinner line per component, fed by `raylane.localstack.StackEvent`s."""

    _icons: ClassVar[dict[str, str]] = {"ready": "[green]✓[/]", "failed": "[red]✗[/]"}

    def __init__(self) -> None:
        self.lines: dict[str, tuple[str, str]] = {}
        self.notes: list[str] = []
        self.live = Live(self.render(), console=console, refresh_per_second=10, transient=False)

    def __call__(self, event: Any) -> None:
        if event.phase == "note":
            self.notes.append(f"{event.component}: {event.detail}")
        elif event.phase == "failed":  # the error itself is printed once, below
            self.lines[event.component] = (event.phase, "failed")
        else:
            self.lines[event.component] = (event.phase, event.detail)
        self.live.update(self.render())

    def render(self) -> Group:
        rows: list[Any] = []
        for name, (phase, detail) in self.lines.items():
            label = Text.from_markup(f"[bold]{name:<7}[/] {detail}")
            if phase in self._icons:
                rows.append(Text.from_markup(f"{self._icons[phase]} ").append(label))
            else:
                rows.append(Spinner("dots", text=label))
        rows += [Text(f"  note: {n}", style="yellow") for n in self.notes]
        return Group(*rows)


@dev_app.command("up")
@friendly_errors
def dev_up(
    component: Annotated[
        list[str] | None,
        typer.Option("--component", "-c", help="Start only these (kafka, redis, mlflow)."),
    ] = None,
) -> None:
    """Start the embedded stack (idempotent: healthy components are reused)."""
    from raylane.localstack import status, up

    progress = _Progress()
    try:
        with progress.live:
            settings = up(component or None, on_event=progress)
    finally:
        if not console.is_terminal:
            console.line()  # Live leaves its last frame unterminated when not on a terminal
    console.print(_status_table(status()))
    console.print(f"settings written to [bold]{settings.home / 'stack.json'}[/]", highlight=False)
    for key, value in settings.as_env().items():
        console.print(f"  {key}={mask_url(value)}", highlight=False)
    env = settings.as_env()
    env.pop("RAYLANE_HOME", None)
    stale = {k: v for k, v in env.items() if os.environ.get(k, v) != v}
    for key, value in stale.items():
        # Settings.load() prefers the environment over stack.json, so say so.
        console.print(
            f"[yellow]note[/]: {key}={mask_url(os.environ[key])} in your environment is not the "
            f"stack's; `export {key}={mask_url(value)}` or unset it",
            highlight=False,
        )


@dev_app.command("down")
@friendly_errors
def dev_down() -> None:
    """Stop every process of the stack that we started; external services are left alone."""
    from raylane.localstack import down, status

    ours = [s.component for s in status() if s.owned]
    with console.status("stopping " + (", ".join(ours) or "nothing")):
        down()
    console.print(f"stopped: {', '.join(ours) or 'nothing we own was running'}")


@dev_app.command("status")
@friendly_errors
def dev_status() -> None:
    """Show each component (address, pid, health, ours or external) and every listening
    socket of the stack and of a local Ray. Exit 1 if any component is unhealthy."""
    from raylane.localstack import listeners, status
    from raylane.settings import raylane_home

    rows = status()
    console.print(_status_table(rows))
    found = listeners(raylane_home())
    table = Table(title="listening sockets (stack and local Ray)", title_justify="left")
    for col in ("process", "pid", "owner", "address", "reachable from"):
        table.add_column(col, overflow="fold")
    for s in found:
        where = "this machine" if s.loopback else "[bold red]the network[/]"
        table.add_row(s.process, str(s.pid), s.owner, s.address, where)
    console.print(table)
    open_ = [s for s in found if not s.loopback]
    if open_:
        console.print(
            f"[bold red]{len(open_)} listener(s) off loopback[/]: "
            + ", ".join(f"{s.process} {s.address}" for s in open_)
            + "; raylane binds 127.0.0.1 unless told otherwise (RAY_ADDRESS, "
            "RAYLANE_METRICS_HOST, --host): check what set them"
        )
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", "-f", help="Serve config of the pipeline.", exists=True, dir_okay=False
    ),
]


@app.command("bootstrap")
@friendly_errors
def bootstrap_cmd(
    config: ConfigOpt = Path("serve_configs/fraud.yaml"),
    users: Annotated[
        int | None, typer.Option(help="Size of the simulated world (default: the use case's).")
    ] = None,
    retrain: Annotated[bool, typer.Option(help="Train and register new model versions.")] = False,
) -> None:
    """Topics, Feast apply + materialize, window backfill, train + register the models."""
    from raylane.bootstrap import bootstrap

    options: dict[str, Any] = {"retrain": retrain}
    if users is not None:
        options["users"] = users
    report = bootstrap(config, console=console, **options)
    console.print(
        f"[bold green]bootstrapped[/] in {report['seconds']} s; now: [bold]serve run {config}[/]",
        highlight=False,
    )


@app.command("demo")
@friendly_errors
def demo_cmd(
    rate: Annotated[float, typer.Option(help="Payments per second.", min=1)] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds of streaming.", min=1)] = 60.0,
    fraud_rate: Annotated[
        float, typer.Option(help="Share of fraudulent payments.", min=0, max=1)
    ] = 0.01,
    malformed_rate: Annotated[
        float, typer.Option(help="Share of malformed records.", min=0, max=1)
    ] = 0.002,
    keep_stack: Annotated[bool, typer.Option(help="Leave the embedded stack running.")] = False,
    config: ConfigOpt = Path("serve_configs/fraud.yaml"),
    dashboard_port: Annotated[
        int,
        typer.Option(
            help="Port of the web dashboard on 127.0.0.1 while streaming (0: none).", min=0
        ),
    ] = 8350,
) -> None:
    """The fraud flow end to end: stack, bootstrap, Serve app, live traffic, summary."""
    from raylane.demo import DemoOptions, run_demo

    users = max(2_000, int(rate * 100))  # each simulated user pays about once every 100 s
    run_demo(
        DemoOptions(
            config=config,
            rate=rate,
            duration=duration,
            fraud_rate=fraud_rate,
            malformed_rate=malformed_rate,
            users=users,
            keep_stack=keep_stack,
            dashboard_port=dashboard_port or None,
        ),
        console,
    )


register_all(app)  # the command groups of raylane/commands/ (schema, dlq, drift, archive, ...)


if __name__ == "__main__":  # pragma: no cover
    app()
