"""``raylane dlq inspect|replay``: what is in a dead-letter topic; re-publish it after a fix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from raylane.commands.schema import RegistryOpt, UrlOpt, _registry

__all__ = ["register"]


def _inputs_for(dlq_topic: str, configs: list[Path] | None) -> set[str]:
    """The input topics of the pipelines (from `configs`, else serve_configs/*.yaml) that
    dead-letter to `dlq_topic`; raises when none does."""
    from raylane.config import load_serve_config
    from raylane.errors import ConfigError

    paths = configs or sorted(Path("serve_configs").glob("*.yaml"))
    inputs: set[str] = set()
    for p in paths:
        try:
            _, cfg = load_serve_config(p)
        except ConfigError:
            if configs:
                raise
            continue  # another kind of Serve config in the folder
        if cfg.input.dlq == dlq_topic:
            inputs.add(cfg.input.topic)
    if not inputs:
        where = ", ".join(map(str, paths)) or "serve_configs/ (no files)"
        raise ConfigError(
            f"no pipeline in {where} dead-letters to {dlq_topic}, so there is no input topic "
            "to replay to; pass the pipeline's config with -f, or a target with --to TOPIC",
            stage="dlq",
        )
    return inputs


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` command group to the root app."""
    from raylane.commands._common import friendly_errors

    dlq_app = typer.Typer(help="Dead-letter topics: inspect and replay.", no_args_is_help=True)
    app.add_typer(dlq_app, name="dlq")

    @dlq_app.command("inspect")
    @friendly_errors
    def inspect(
        topic: Annotated[str, typer.Argument(help="DLQ topic, e.g. payments.initiated.dlq.")],
        samples: Annotated[int, typer.Option(help="Sample records shown.")] = 5,
        error_class: Annotated[
            str | None, typer.Option("--error-class", help="Only samples of this class.")
        ] = None,
        registry_dir: RegistryOpt = None,
        url: UrlOpt = None,
    ) -> None:
        """Counts by error class and stage, and a few samples decoded as far as possible."""
        from raylane.kafka.deadletters import describe_value
        from raylane.kafka.replay import read_dead_letters, summarize
        from raylane.settings import Settings

        _console = Console()
        settings = Settings.load()
        with _console.status(f"reading {topic} from {settings.kafka_bootstrap}"):
            letters = asyncio.run(read_dead_letters(settings.kafka_bootstrap, topic))
        counts = Table(title=f"{topic}: {len(letters)} dead letters", title_justify="left")
        for col in ("error class", "stage", "count"):
            counts.add_column(col)
        for (cls, stage), n in summarize(letters).most_common():
            counts.add_row(cls, stage, str(n))
        _console.print(counts)
        shown = [d for d in letters if error_class in (None, d.error_class)][-samples:]
        if not shown:
            return
        registry = _registry(registry_dir, url)
        table = Table(title="latest samples", title_justify="left", show_lines=True)
        for col in ("dlq", "source", "class", "correlation id", "message", "value"):
            table.add_column(col, overflow="fold")
        for d in shown:
            subject = f"{d.source_topic}-value" if d.source_topic else None
            if subject and subject not in registry.subjects():
                subject = None
            if d.is_batch:  # the raw bytes of a Kafka record batch, not an event
                value = f"[record batch of {d.original_size} B, not an event]"
            else:
                value = describe_value(d.value, registry, subject)
            if d.truncated:
                value = f"[truncated from {d.original_size} B] {value}"
            table.add_row(
                d.where, d.source, d.error_class, d.correlation_id, d.message[:300], value
            )
        _console.print(table)

    @dlq_app.command("replay")
    @friendly_errors
    def replay(
        topic: Annotated[str, typer.Argument(help="DLQ topic, e.g. payments.initiated.dlq.")],
        error_class: Annotated[
            str | None, typer.Option("--error-class", help="Only records of this error class.")
        ] = None,
        since: Annotated[
            str | None,
            typer.Option(help="Only records dead-lettered since: 30m, 2h, 1d or an ISO time."),
        ] = None,
        to: Annotated[
            str | None, typer.Option(help="Publish here instead of each record's source topic.")
        ] = None,
        force: Annotated[
            bool, typer.Option(help="Replay event ids the ledger shows replayed already.")
        ] = False,
        dry_run: Annotated[bool, typer.Option(help="Only say what would be replayed.")] = False,
        max_batch_bytes: Annotated[
            int | None,
            typer.Option(
                "--max-batch-bytes",
                help="Also replay, record by record, the record batches the ingress could not "
                "read, decompressing each up to this many bytes (after installing the codec it "
                "lacked, or raising input.max_decompressed_batch_bytes to this).",
            ),
        ] = None,
        config: Annotated[
            list[Path] | None,
            typer.Option(
                "--config",
                "-f",
                help="Serve configs whose input topics a record may go back to "
                "(default: every serve_configs/*.yaml whose DLQ is TOPIC).",
                dir_okay=False,
            ),
        ] = None,
        registry_dir: RegistryOpt = None,
        url: UrlOpt = None,
    ) -> None:
        """Re-publish dead letters (original key, bytes, headers) to their source topic, once.

        Only to the input topic of a pipeline whose DLQ this is, unless --to names a topic.
        """
        from raylane.kafka.replay import ledger_topic, parse_since
        from raylane.kafka.replay import replay as do_replay
        from raylane.settings import Settings

        _console = Console()
        settings = Settings.load()
        since_ms = parse_since(since) if since else None
        allowed = None if to else _inputs_for(topic, config)
        with _console.status(f"replaying {topic}"):
            rep = asyncio.run(
                do_replay(
                    settings.kafka_bootstrap,
                    topic,
                    error_class=error_class,
                    since_ms=since_ms,
                    to_topic=to,
                    force=force,
                    dry_run=dry_run,
                    registry=_registry(registry_dir, url),
                    allowed_topics=allowed,
                    max_batch_bytes=max_batch_bytes,
                )
            )
        verb = "would replay" if dry_run else "replayed"
        n = len(rep.event_ids) if dry_run else rep.replayed
        targets = ", ".join(f"{t}: {k}" for t, k in rep.by_target.items()) or "-"
        _console.print(
            f"read {rep.read} dead letters, {rep.selected} selected; {verb} {n} ({targets}); "
            f"skipped {rep.already_replayed} already replayed (ledger {ledger_topic(topic)}), "
            f"{rep.duplicates} duplicate event ids, {rep.truncated} truncated, {rep.batches} "
            f"record batches it could not read (see --max-batch-bytes), {rep.foreign} "
            f"whose source is not an input of {sorted(allowed) if allowed else 'the --to topic'}",
            highlight=False,
        )
