"""Model lifecycle commands: ``shadow report``, ``promote``, ``rollback``, ``history``.

``raylane shadow report fraud`` prints the rolling shadow aggregates (and writes them
as JSON with ``--json PATH``); ``raylane promote fraud`` checks the config's gates
against them and moves the champion alias; ``raylane rollback fraud`` restores
``previous``; ``raylane history fraud`` lists promotions and rollbacks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from raylane.config import PipelineConfig
    from raylane.lifecycle.gates import GateResult
    from raylane.lifecycle.shadow_stats import ShadowAggregate

__all__ = ["register"]

PipelineArg = Annotated[str, typer.Argument(help="Pipeline name, e.g. fraud.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-f",
        help="Serve config (default serve_configs/<pipeline>.yaml).",
        dir_okay=False,
    ),
]


def _config(pipeline: str, config: Path | None) -> PipelineConfig:
    from raylane.config import load_serve_config
    from raylane.errors import ConfigError

    path = config or Path("serve_configs") / f"{pipeline}.yaml"
    _, cfg = load_serve_config(path)
    if cfg.name != pipeline:
        raise ConfigError(f"{path} holds pipeline {cfg.name!r}, not {pipeline!r}; pass --config")
    return cfg


def _f(v: Any, pct: bool = False, ms: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.2f} %"
    if ms:
        return f"{v:.2f} ms"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _report_table(pipeline: str, aggs: list[ShadowAggregate]) -> Any:
    from rich.table import Table

    t = Table(title=f"shadow report: {pipeline}", title_justify="left")
    t.add_column("figure")
    for a in aggs:
        t.add_column(f"{a.shadow}", justify="right")
    rows: list[tuple[str, Any]] = [
        ("primary", lambda a: f"{a.primary_model} v{a.primary_version}" if a.n else "-"),
        ("shadow", lambda a: f"{a.shadow_model} v{a.shadow_version}" if a.n else "-"),
        ("n (events compared)", lambda a: str(a.n)),
        ("agreement rate", lambda a: _f(a.agreement_rate, pct=True)),
        ("mean |Δ|", lambda a: _f(a.mean_abs_delta)),
        ("p95 |Δ|", lambda a: _f(a.p95_abs_delta)),
        ("flag rate primary", lambda a: _f(a.primary_flag_rate, pct=True)),
        ("flag rate shadow", lambda a: _f(a.shadow_flag_rate, pct=True)),
        ("latency p50 primary", lambda a: _f(a.primary_latency_p50_ms, ms=True)),
        ("latency p99 primary", lambda a: _f(a.primary_latency_p99_ms, ms=True)),
        ("latency p50 shadow", lambda a: _f(a.shadow_latency_p50_ms, ms=True)),
        ("latency p99 shadow", lambda a: _f(a.shadow_latency_p99_ms, ms=True)),
        ("latency p99 ratio", lambda a: _f(a.latency_p99_ratio)),
        ("shadow errors / timeouts", lambda a: f"{a.errors} / {a.timeouts}"),
    ]
    for label, fn in rows:
        t.add_row(label, *[fn(a) for a in aggs])
    return t


def _gates_table(gates: list[GateResult]) -> Any:
    from rich.table import Table

    from raylane.lifecycle.promotion import _text

    t = Table(title="promotion gates", title_justify="left")
    for col in ("gate", "threshold", "measured", "result", "detail"):
        t.add_column(col, overflow="fold")
    for g in gates:
        t.add_row(
            g.name,
            _text(g.threshold),
            _text(g.measured),
            "[green]pass[/]" if g.passed else "[red]FAIL[/]",
            g.detail,
        )
    return t


def register(app: typer.Typer) -> None:
    from raylane.commands._common import console, friendly_errors

    shadow_app = typer.Typer(
        help="Shadow models: compare them with the primary on live traffic.", no_args_is_help=True
    )
    app.add_typer(shadow_app, name="shadow")

    @shadow_app.command("report")
    @friendly_errors
    def shadow_report(
        pipeline: PipelineArg,
        config: ConfigOpt = None,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Also write the figures here.")
        ] = None,
        window: Annotated[
            int | None, typer.Option(help="Most recent events (default: promotion.window).", min=1)
        ] = None,
    ) -> None:
        """Rolling aggregates per shadow: n, agreement, |Δ|, flag rates, latencies."""
        from dataclasses import asdict

        from raylane.sdk import Pipeline

        cfg = _config(pipeline, config)
        if not cfg.models.shadows:
            console.print(f"pipeline {pipeline} has no shadows (models.shadows is empty)")
            return
        p = Pipeline(cfg)
        aggs = p.shadow_report(window)
        console.print(_report_table(cfg.name, aggs))
        drift = p.drift_state()  # the promote gate reads the same state
        if drift is None:
            console.print(f"drift: no window evaluated yet (`raylane drift status {cfg.name}`)")
        else:
            verdict = "[bold red]OPEN ALERT[/]" if drift.open else "[green]no alert[/]"
            console.print(
                f"drift: {verdict} on {drift.model_name} v{drift.model_version}: share "
                f"{drift.drift_share:.2f} (threshold {drift.threshold:.2f}), drifted "
                f"{', '.join(drift.drifted_columns) or 'none'}; window end {drift.window_end}"
            )
        if not any(a.n for a in aggs):
            console.print(
                "[yellow]no comparisons yet[/]: run the pipeline (`serve run "
                f"serve_configs/{pipeline}.yaml`) and send traffic"
            )
        if json_path is not None:
            json_path.write_text(
                json.dumps(
                    {
                        "pipeline": cfg.name,
                        "generated_at": time.time(),
                        "shadows": [a.to_dict() for a in aggs],
                        "drift": asdict(drift) if drift else None,
                    },
                    indent=2,
                )
            )
            console.print(f"wrote {json_path}")

    @shadow_app.command("set")
    @friendly_errors
    def shadow_set(
        pipeline: PipelineArg,
        version: Annotated[int, typer.Argument(help="The model version the shadows serve.", min=1)],
        config: ConfigOpt = None,
        reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")] = "",
    ) -> None:
        """Move the challenger alias (what the shadows serve) to VERSION, approved and audited.

        With a promotion key set, shadow replicas serve only versions moved here or by
        bootstrap; running ones switch within reload_poll_s + load time.
        """
        from raylane.sdk import Pipeline

        ev = Pipeline(_config(pipeline, config)).set_challenger(version, reason=reason)
        console.print(
            f"[bold green]shadow set[/] {ev['model_name']}@{ev['alias']}: "
            f"v{ev['from_version']} -> v{ev['to_version']}",
            highlight=False,
        )

    @app.command("promote")
    @friendly_errors
    def promote_cmd(
        pipeline: PipelineArg,
        config: ConfigOpt = None,
        version: Annotated[
            int | None, typer.Option(help="Promote this version instead of the challenger.", min=1)
        ] = None,
        force: Annotated[
            bool, typer.Option(help="Promote even if gates fail (needs --reason).")
        ] = False,
        reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")] = "",
    ) -> None:
        """Move champion to the challenger (or --version) if the gates pass; audit the move.

        The audit's actor is this environment's identity ($RAYLANE_ACTOR, set by the CI or
        the platform, else user@host), never a free-text option.
        """
        from raylane.lifecycle.promotion import GatesFailed
        from raylane.sdk import Pipeline

        cfg = _config(pipeline, config)
        try:
            out = Pipeline(cfg).promote(version=version, force=force, reason=reason)
        except GatesFailed as e:
            console.print(_gates_table(e.gates))
            raise
        console.print(_gates_table(out.gates))
        ev = out.event
        forced = " [yellow](forced)[/]" if ev["forced"] else ""
        console.print(
            f"[bold green]promoted[/]{forced} {ev['model_name']}@{ev['alias']}: "
            f"v{ev['from_version']} -> v{ev['to_version']} (v{ev['from_version']} keeps "
            f"@{ev['previous_alias']}); running replicas switch within "
            f"{cfg.models.primary.reload_poll_s:g} s + load time",
            highlight=False,
        )

    @app.command("rollback")
    @friendly_errors
    def rollback_cmd(
        pipeline: PipelineArg,
        config: ConfigOpt = None,
        reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")] = "",
    ) -> None:
        """Restore the previous champion (alias `previous`); audited like a promotion."""
        from raylane.sdk import Pipeline

        ev = Pipeline(_config(pipeline, config)).rollback(reason=reason)
        console.print(
            f"[bold green]rolled back[/] {ev['model_name']}@{ev['alias']}: "
            f"v{ev['from_version']} -> v{ev['to_version']}",
            highlight=False,
        )

    @app.command("history")
    @friendly_errors
    def history_cmd(
        pipeline: PipelineArg,
        config: ConfigOpt = None,
        kafka: Annotated[bool, typer.Option(help="Also read the models.promoted topic.")] = True,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Also write the events here.")
        ] = None,
    ) -> None:
        """Promotions and rollbacks of the pipeline's model, oldest first."""
        from datetime import UTC, datetime

        from rich.table import Table

        from raylane.lifecycle.promotion import history
        from raylane.settings import Settings

        cfg = _config(pipeline, config)
        events = history(cfg, bootstrap=Settings.load().kafka_bootstrap if kafka else None)
        t = Table(title=f"model history: {pipeline}", title_justify="left")
        for col in (
            "when (UTC)",
            "action",
            "model",
            "from",
            "to",
            "who",
            "gates",
            "reason",
            "source",
        ):
            t.add_column(col, overflow="fold")
        for e in events:
            gates = e.get("gates") or []
            failed = [g["name"] for g in gates if not g["passed"]]
            gtxt = (
                "-"
                if not gates
                else ("all passed" if not failed else "failed: " + ", ".join(failed))
            )
            if e.get("forced"):
                gtxt += " (forced)"
            when = datetime.fromtimestamp(int(e["at"]) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            t.add_row(
                when,
                e["action"],
                f"{e['model_name']}@{e['alias']}",
                f"v{e.get('from_version')}",
                f"v{e['to_version']}",
                e["actor"],
                gtxt,
                e.get("reason") or "",
                e.get("source", ""),
            )
        console.print(t)
        if not events:
            console.print("no promotions or rollbacks recorded yet")
        if json_path is not None:
            json_path.write_text(json.dumps(events, indent=2, default=str))
            console.print(f"wrote {json_path}")

    @app.command("backtest")
    @friendly_errors
    def backtest_cmd(
        pipeline: PipelineArg,
        candidate: Annotated[
            str,
            typer.Option(
                help="Model URI to test, e.g. models:/fraud@challenger or models:/fraud/4."
            ),
        ],
        config: ConfigOpt = None,
        champion: Annotated[
            str | None, typer.Option(help="Compare with this URI (default: the primary's).")
        ] = None,
        since: Annotated[
            str | None, typer.Option(help="Start of the range: 30m, 2h, 1d or an ISO time.")
        ] = None,
        until: Annotated[str | None, typer.Option(help="End of the range (default: now).")] = None,
        threshold: Annotated[
            float | None, typer.Option(help="Decision threshold (default: the score rule's).")
        ] = None,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Also write the report here.")
        ] = None,
        engine: Annotated[
            str,
            typer.Option(
                help="ray (Ray Data), local (this process) or auto: local up to 64 MiB "
                "of archive, else ray."
            ),
        ] = "auto",
    ) -> None:
        """Score archived traffic with CANDIDATE and the champion (on Ray Data, or in process
        for a small range); AUC, precision, recall at the decision threshold, against the
        archived labels."""
        from rich.table import Table

        from raylane.sdk import Pipeline

        if engine not in ("auto", "ray", "local"):
            raise typer.BadParameter(f"{engine!r}: use ray, local or auto", param_hint="--engine")
        p = Pipeline(_config(pipeline, config))
        with console.status("scoring the archive"):
            rep = p.backtest(
                candidate, champion, since, until, threshold=threshold, engine=cast("Any", engine)
            )
        console.print(
            f"backtest: {rep.events:,} events, {rep.labelled:,} labelled, "
            f"threshold {rep.threshold:g}, scored on {rep.extra['engine']}"
        )
        for name in rep.models:  # URIs outside the table: a narrow terminal never cuts them
            console.print(f"  {name}: {rep.extra['uris'][name]}", soft_wrap=True)
        t = Table()
        for col in ("model", "n", "positives", "ROC AUC", "precision", "recall", "flag rate"):
            t.add_column(
                col, justify="left" if col == "model" else "right", no_wrap=True, overflow="fold"
            )
        for name, q in rep.models.items():
            t.add_row(
                name,
                f"{q.n:,}",
                f"{q.positives:,}",
                _f(q.auc),
                _f(q.precision, pct=True),
                _f(q.recall, pct=True),
                _f(q.flag_rate, pct=True),
            )
        console.print(t)
        if rep.agreement is not None:
            console.print(
                f"decisions agree on {100 * rep.agreement:.2f} % of events; mean |Δ| "
                f"{rep.mean_abs_delta:.4f}, p95 |Δ| {rep.p95_abs_delta:.4f}"
            )
        if json_path is not None:
            json_path.write_text(json.dumps(rep.to_dict(), indent=2, default=str))
            console.print(f"wrote {json_path}", soft_wrap=True)
