"""Checks that raylane's own Kafka paths work through a secured listener (TLS, SASL): each
uses only the connection the ``RAYLANE_KAFKA_*`` variables describe, as a replica would."""

from __future__ import annotations

import asyncio

from raylane.kafka.client import connection


async def ingress_dead_letters_and_scores(unique: str) -> None:
    """The ingress loop: four good events scored, a bad one to the DLQ, read back."""
    from raylane.bootstrap import pipeline_topics
    from raylane.contracts import Codec
    from raylane.kafka.admin import ensure_topics_async
    from raylane.kafka.producer import EventProducer
    from raylane.kafka.replay import read_dead_letters, summarize
    from raylane.testing import World
    from tests.integration.kafka.test_deadletter_tools import _cfg, _run

    cfg = _cfg(unique)
    await ensure_topics_async(connection(), pipeline_topics(cfg), partitions=1)
    events = [le.event for le in World(seed=21, n_users=10).stream(start=0, rate=10).take(4)]
    async with EventProducer(
        connection(),
        cfg.input.topic,
        Codec.for_contract("payments.initiated"),
        key_field=cfg.input.key_field,
    ) as prod:
        await prod.send_many(events)
        await (await prod.send_raw(b"\x07not an event", key=b"bad"))
    stats = await _run(cfg, lambda s: s.scored + s.dlq >= 5)
    assert (stats.scored, stats.dlq) == (4, 1)
    letters = await read_dead_letters(connection(), cfg.input.dlq)
    assert sum(summarize(letters).values()) == 1


def dlq_cli_reads_and_replays(unique: str, prefix: str) -> None:
    """``raylane dlq inspect`` and ``replay`` on two dead letters written here."""
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.contracts import Codec, UnknownSchemaId
    from raylane.kafka.deadletters import dlq_record
    from raylane.kafka.producer import EventProducer
    from raylane.kafka.reader import read_topic
    from raylane.kafka.records import InRecord

    dlq, source = f"{prefix}.{unique}.dlq", f"{prefix}.{unique}"
    recs = [
        dlq_record(
            InRecord(source, 0, i, b"k", b"\x07bad", [("event_id", f"e{i}".encode())]),
            UnknownSchemaId(f"schema id {i} unknown"),
            f"cid-{i}",
            dlq,
        )
        for i in range(2)
    ]

    async def write() -> None:
        async with EventProducer(
            connection(), dlq, Codec("payments.initiated-value"), key_field="user_id"
        ) as p:
            for r in recs:
                await p.send_raw(r.value, key=r.key, headers=r.headers)
            await p.flush()

    asyncio.run(write())
    runner = CliRunner()
    res = runner.invoke(app, ["dlq", "inspect", dlq], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # rich wraps at the runner's width
    assert "2 dead letters" in out and "UnknownSchemaId" in out
    res = runner.invoke(app, ["dlq", "replay", dlq, "--to", source], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    replayed = asyncio.run(read_topic(connection(), source, 1.0, stage="dlq"))
    assert sorted(dict(m.headers)["event_id"] for m in replayed) == [b"e0", b"e1"]
