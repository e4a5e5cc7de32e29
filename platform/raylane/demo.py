"""`raylane demo`: the fraud flow from nothing to a live view, then a summary.

Starts the embedded stack (unless one runs), bootstraps the pipeline, deploys
the Serve app on local Ray, streams synthetic payments in real time (with fraud
bursts and a trickle of malformed records), and shows what a downstream
consumer sees plus the replicas' Prometheus metrics. While it streams, the web
dashboard (:mod:`raylane.dashboard`) is up on 127.0.0.1 and its URL is printed.
Ctrl-C or the end of `duration` stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.kafka.producer import EventProducer
from raylane.monitoring.live import OutputWatcher, WatchStats, histogram_quantile, scrape
from raylane.settings import Settings

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    config: Path = Path("serve_configs/fraud.yaml")
    rate: float = 200.0
    duration: float = 60.0
    fraud_rate: float = 0.01
    malformed_rate: float = 0.002
    users: int = 20_000
    keep_stack: bool = False
    #: port of the web dashboard on 127.0.0.1 (another free one if taken); None: no dashboard
    dashboard_port: int | None = 8350


def run_demo(opts: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    from raylane import localstack
    from raylane.bootstrap import bootstrap
    from raylane.config import load_serve_config
    from raylane.serving.runtime import run_pipeline

    console = console or Console()
    _, cfg = load_serve_config(opts.config)
    running_before = {s.component for s in localstack.status() if s.healthy and s.owned}
    started = False
    try:
        with console.status("starting the embedded stack (Kafka, Redis, MLflow)"):
            localstack.up()
            started = not running_before
        console.print(
            "[green]✓[/] stack up: "
            + ", ".join(f"{s.component} {s.address}" for s in localstack.status())
        )
        bootstrap(opts.config, console=console, users=opts.users)
        with console.status(f"deploying the Serve app ({_deployed(cfg)}) on local Ray"):
            ctx = run_pipeline(opts.config)
            running = ctx.__enter__()
        live = _LiveState()
        dashboard = None
        try:
            running.wait_assigned()
            live.app_running_at = time.time()
            dashboard = _start_dashboard(cfg, opts, console)
            console.print(
                f"[green]✓[/] app running {live.app_running_at - live.command_at:.0f} s after "
                "the command; streaming payments (Ctrl-C stops)"
            )
            asyncio.run(_drive(cfg, opts, console, live))
            stop: tuple[Any, Any, Any] = (None, None, None)
        except KeyboardInterrupt as e:
            console.print("[yellow]interrupted[/]: summary of what was seen so far")
            stop = (KeyboardInterrupt, e, None)
        finally:
            if dashboard is not None:
                dashboard.stop()
        summary = _summary(live, console)
        with (
            console.status("stopping the Serve app and Ray"),
            contextlib.suppress(KeyboardInterrupt),
        ):
            ctx.__exit__(*stop)
        return summary
    finally:
        if started and not opts.keep_stack:
            with console.status("stopping the embedded stack"):
                localstack.down()
            console.print("[green]✓[/] everything stopped")


def _deployed(cfg: PipelineConfig) -> str:
    """What the Serve app holds, for the status line: the ingress and where each model runs."""
    parts = ["ingress"]
    for m in (cfg.models.primary, *cfg.models.shadows):
        parts.append(f"{m.name} in the ingress" if m.placement == "ingress" else m.name)
    return ", ".join(parts)


def _command_started() -> float:
    """When this process started (wall clock): the user's command, imports included."""
    import psutil

    return float(psutil.Process().create_time())


def _start_dashboard(cfg: PipelineConfig, opts: DemoOptions, console: Console) -> Any:
    """The web dashboard on 127.0.0.1 while the demo streams (None if it cannot start)."""
    if opts.dashboard_port is None:
        return None
    from raylane.dashboard import DashboardServer, open_dashboard
    from raylane.errors import RaylaneError

    for port in dict.fromkeys((opts.dashboard_port, 0)):  # the asked port, else any free one
        server = DashboardServer(open_dashboard(cfg), host="127.0.0.1", port=port, token=None)
        try:
            url = server.start()
        except RaylaneError:
            server.stop()
            continue
        console.print(f"[green]✓[/] dashboard: [bold]{url}[/] (up while the demo streams)")
        return server
    console.print("[yellow]the dashboard could not start[/]; the live view below has the figures")
    return None


@dataclass
class _LiveState:
    """What the traffic driver has done and seen; read for the summary, even after Ctrl-C."""

    stats: WatchStats = field(default_factory=WatchStats)
    sent: int = 0
    labels: int = 0
    malformed: int = 0
    fraud_ids: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    #: wall-clock times: the command's process start, and the app assigned its partitions
    command_at: float = field(default_factory=_command_started)
    app_running_at: float | None = None


async def _drive(cfg: PipelineConfig, opts: DemoOptions, console: Console, st: _LiveState) -> None:
    async with contextlib.AsyncExitStack() as stack:
        labels = cfg.labels
        lab = None
        if labels is not None:  # delayed ground truth, minutes compressed into seconds
            lab = await stack.enter_async_context(
                EventProducer(
                    Settings.load().kafka_bootstrap,
                    labels.topic,
                    Codec.for_contract(labels.contract),
                    key_field="event_id",
                )
            )
        await _stream(cfg, opts, console, st, lab)


async def _stream(
    cfg: PipelineConfig,
    opts: DemoOptions,
    console: Console,
    st: _LiveState,
    lab: EventProducer | None,
) -> None:
    from raylane.testing import LabelFeed, World

    settings = Settings.load()
    world = World(seed=7, n_users=opts.users)
    codec = Codec.for_contract(cfg.input.contract)
    decoders = {t: Codec.for_contract(c) for t, c in _output_contracts(cfg).items()}
    watcher = OutputWatcher(cfg, settings.kafka_bootstrap, decoders)
    st.stats = watcher.stats
    await watcher.start()
    stream = world.stream(rate=opts.rate, fraud_rate=opts.fraud_rate, seed=int(time.time()))
    rng = random.Random(1)
    feed = LabelFeed(chargeback_min_s=5, chargeback_max_s=20, maturity_s=20, seed=1)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    task = progress.add_task("streaming", total=opts.duration)
    st.started = t_start = time.monotonic()
    history: list[tuple[float, int, int]] = []
    metrics: dict[str, float] = {}
    last_view = 0.0
    try:
        async with EventProducer(
            settings.kafka_bootstrap, cfg.input.topic, codec, key_field=cfg.input.key_field
        ) as prod:
            with Live(console=console, refresh_per_second=4) as live:
                while (elapsed := time.monotonic() - t_start) < opts.duration:
                    now_ms = int(time.time() * 1000)
                    batch = []
                    while stream.next_time_ms <= now_ms:
                        le = next(stream)
                        batch.append(le.event)
                        feed.add(le)
                        if le.is_fraud:
                            st.fraud_ids.add(le.event["event_id"])
                    if batch:
                        await prod.send_many(batch, wait=False)
                        st.sent += len(batch)
                        n_bad = sum(rng.random() < opts.malformed_rate for _ in batch)
                        for _ in range(n_bad):
                            await prod.send_raw(b"\x00\x00\x00" + rng.randbytes(12), key=b"demo")
                        st.malformed += n_bad
                    due = feed.due(now_ms) if lab is not None else []
                    if lab is not None and due:
                        await lab.send_many(due, wait=False)
                        st.labels += len(due)
                    if (
                        time.monotonic() - last_view > 0.5
                    ):  # scrape off the event loop, twice a second
                        last_view = time.monotonic()
                        history.append((last_view, st.sent, watcher.stats.scored))
                        metrics = await asyncio.to_thread(scrape, settings.home, 0.2)
                        progress.update(task, completed=elapsed)
                        live.update(Group(_view(watcher.stats, history, st, metrics), progress))
                    await asyncio.sleep(0.01)
                await prod.flush()
                # let the last events through
                deadline = time.monotonic() + 10
                while watcher.stats.scored < st.sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                live.update(Group(_view(watcher.stats, history, st, metrics), progress))
    finally:
        await watcher.stop()


def _output_contracts(cfg: PipelineConfig) -> dict[str, str]:
    out = {cfg.outputs.scored.topic: cfg.outputs.scored.contract}
    if cfg.outputs.shadow:
        out[cfg.outputs.shadow.topic] = cfg.outputs.shadow.contract
    for r in cfg.decision.rules:
        if r.publish:
            out[r.publish.topic] = r.publish.contract
    return out


def _rate(history: list[tuple[float, int, int]], idx: int, window_s: float = 5.0) -> float:
    if len(history) < 2:
        return 0.0
    t1 = history[-1][0]
    old = next((h for h in history if h[0] >= t1 - window_s), history[0])
    dt = t1 - old[0]
    return (history[-1][idx] - old[idx]) / dt if dt > 0 else 0.0


def _view(
    s: WatchStats, history: list[tuple[float, int, int]], st: _LiveState, m: dict[str, float]
) -> Table:
    sent, malformed = st.sent, st.malformed
    t = Table(title="raylane fraud pipeline — live", show_header=True, expand=False)
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("events sent / s (last 5 s)", f"{_rate(history, 1):,.0f}")
    t.add_row("events scored / s (last 5 s)", f"{_rate(history, 2):,.0f}")
    t.add_row("sent (valid + malformed)", f"{sent:,} + {malformed:,}")
    t.add_row("labels sent (delayed ground truth)", f"{st.labels:,}")
    t.add_row("scored (distinct event ids)", f"{len(s.scored_ids):,}")
    t.add_row("flagged", f"{s.flagged:,}")
    t.add_row("DLQ", f"{s.dlq:,}")
    t.add_row(
        "event→scored latency p50 / p99", f"{s.percentile(50):.1f} / {s.percentile(99):.1f} ms"
    )
    t.add_row(
        "shadow agreement (challenger vs champion)",
        f"{s.agreement:.2%} of {s.shadow:,}" if s.shadow else "—",
    )
    if m:
        for stage in ("window_ms", "online_ms", "score_ms", "batch_ms"):
            q = histogram_quantile(m, "raylane_stage_latency_ms", 0.5, f"stage={stage}")
            t.add_row(f"[dim]stage {stage[:-3]} p50 (Prometheus)[/]", f"[dim]{q:.2f} ms[/]")
        batches = m.get("raylane_batches_total{}", 0.0)
        events = m.get("raylane_events_in_total{}", 0.0)
        t.add_row("[dim]mean batch size[/]", f"[dim]{events / batches:.1f}[/]" if batches else "—")
        retries = sum(v for k, v in m.items() if k.startswith("raylane_batch_retries_total"))
        t.add_row(
            "[dim]batch retries / paused[/]",
            f"[dim]{retries:.0f} / {'yes' if m.get('raylane_consumer_paused{}') else 'no'}[/]",
        )
    return t


def _summary(st: _LiveState, console: Console) -> dict[str, Any]:
    s, sent, malformed, fraud_ids = st.stats, st.sent, st.malformed, st.fraud_ids
    seconds = time.monotonic() - st.started
    caught = len(s.flagged_ids & fraud_ids)

    def since_command(at: float | None) -> float | None:
        return None if at is None else round(at - st.command_at, 1)

    out = {
        "seconds": round(seconds, 1),
        "app_running_s": since_command(st.app_running_at),
        "first_flagged_s": since_command(s.first_flagged_at),
        "sent": sent,
        "malformed": malformed,
        "labels_sent": st.labels,
        "scored_distinct": len(s.scored_ids),
        "flagged": s.flagged,
        "dlq": s.dlq,
        "latency_p50_ms": round(s.percentile(50, recent=False), 1),
        "latency_p99_ms": round(s.percentile(99, recent=False), 1),
        "shadow_agreement": round(s.agreement, 4) if s.shadow else None,
        "fraud_recall": round(caught / len(fraud_ids), 3) if fraud_ids else None,
        "flag_precision": round(caught / len(s.flagged_ids), 3) if s.flagged_ids else None,
    }
    t = Table(title="summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in out.items():
        t.add_row(k.replace("_", " "), str(v))
    console.print(t)
    return out
