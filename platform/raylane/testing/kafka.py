"""Kafka helpers for tests, benches and notebooks: isolated pipelines and reading topics.

`isolated_args` gives a pipeline its own topics and consumer group, so runs never read
each other's events (the pipeline keeps its name, and so its window state);
`partition_ends` finds where each partition ends by reading it; `read_records` and
`collect` read topics from the beginning while a pipeline is still writing them;
`committed_offsets` reads a group's commits; `record_batch` builds a raw record batch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from raylane.bootstrap import pipeline_topics
from raylane.config import PipelineConfig
from raylane.kafka.client import connection

__all__ = [
    "collect",
    "committed_offsets",
    "isolated_args",
    "isolated_topics",
    "partition_ends",
    "read_records",
    "record_batch",
]


def isolated_args(config: str | Path, suffix: str, **ingress: Any) -> dict[str, Any]:
    """The pipeline args of a serve config with every topic and the group suffixed."""
    doc = yaml.safe_load(Path(config).read_text())
    args: dict[str, Any] = copy.deepcopy(doc["applications"][0]["args"])
    args["input"]["topic"] = f"{args['input']['topic']}.{suffix}"
    args["input"].pop("dlq_topic", None)  # defaults to <topic>.dlq
    args["ingress"]["group_id"] = f"{args['ingress']['group_id']}-{suffix}"
    args["ingress"].update(ingress)
    for out in args["outputs"].values():
        out["topic"] = f"{out['topic']}.{suffix}"
    for rule in args.get("decision", {}).get("rules", []):
        if rule.get("publish"):
            rule["publish"]["topic"] = f"{rule['publish']['topic']}.{suffix}"
    _isolate_monitors(args, suffix)
    return args


def place_models(args: dict[str, Any], placement: str | None) -> dict[str, Any]:
    """`args` with every model (primary and shadows) at `placement` (``deployment`` or
    ``ingress``; None leaves the config's). The shipped fraud config places its models in
    the ingress; a test of model replicas (hot swap of a deployment, a killed model replica,
    autoscaling, GPU placement) asks for deployments."""
    if placement is None:
        return args
    for m in [args["models"]["primary"], *args["models"].get("shadows", [])]:
        m["placement"] = placement
    return args


def _isolate_monitors(args: dict[str, Any], suffix: str) -> None:
    """Suffix the drift monitor's, action runner's and archiver's topics and groups too, and
    the labels topic."""
    name = args.get("name", "pipeline")
    if isinstance(args.get("drift"), dict):
        drift = args["drift"]
        out = drift.get("output") or {"topic": "model.drift", "contract": "model.drift"}
        drift["output"] = {**out, "topic": f"{out['topic']}.{suffix}"}
        drift["group_id"] = f"{drift.get('group_id') or name + '-drift'}-{suffix}"
    if isinstance(args.get("actions"), dict):
        actions = args["actions"]
        actions["group_id"] = f"{actions.get('group_id') or name + '-actions'}-{suffix}"
        for t in actions.get("topics", []):
            t["topic"] = f"{t['topic']}.{suffix}"
            if t.get("dlq_topic"):
                t["dlq_topic"] = f"{t['dlq_topic']}.{suffix}"
            for h in t.get("handlers", []):
                if h.get("type") == "publish":
                    h["output"] = {**h["output"], "topic": f"{h['output']['topic']}.{suffix}"}
    if isinstance(args.get("archive"), dict):
        archive = args["archive"]
        archive["group_id"] = f"{archive.get('group_id') or name + '-archive'}-{suffix}"
        archive["topics"] = [
            {"topic": f"{t}.{suffix}"}
            if isinstance(t, str)
            else {**t, "topic": f"{t['topic']}.{suffix}"}
            for t in archive.get("topics", [])
        ]
    if isinstance(args.get("labels"), dict):
        labels = args["labels"]
        labels["topic"] = f"{labels.get('topic') or 'payments.labels'}.{suffix}"


def isolated_topics(args: dict[str, Any]) -> list[str]:
    """Every topic the (isolated) pipeline reads or writes."""
    return pipeline_topics(PipelineConfig.from_args(args))


async def partition_ends(bootstrap: str, topic: str, idle_s: float = 1.0) -> dict[int, int]:
    """Offset after the last record of each partition, found by reading the topic.

    (The embedded Tansu broker's ListOffsets answers the last batch's base offset + 1,
    not the high watermark, when producers batch records; reading is exact everywhere.)
    """
    c = connection(bootstrap).consumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await c.start()
    ends: dict[int, int] = {p: 0 for p in c.partitions_for_topic(topic) or ()}
    try:
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < idle_until:
            got = await c.getmany(timeout_ms=200)
            for tp, msgs in got.items():
                if msgs:
                    ends[tp.partition] = max(ends.get(tp.partition, 0), msgs[-1].offset + 1)
                    idle_until = time.monotonic() + idle_s
    finally:
        await c.stop()
    return ends


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: Any
) -> dict[int, int | None]:
    """The offset `group_id` has committed on each of `partitions` of `topic` (None: none)."""
    from aiokafka import TopicPartition

    c = connection(bootstrap).consumer(group_id=group_id)
    await c.start()
    try:
        return {p: await c.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await c.stop()


def record_batch(
    values: list[bytes], *, base: int = 0, codec: int = 0, headers: Any = (), key: Any = None
) -> bytes:
    """A v2 record batch of `values` (offsets from `base`, aiokafka's codec number), the bytes
    a producer would send: for tests that feed the parser or the broker batches by hand."""
    import struct

    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, v in enumerate(values):
        b.append(i, timestamp=None, key=key, value=v, headers=list(headers))
    raw = bytearray(b.build())
    struct.pack_into(">q", raw, 0, base)  # the base offset is outside the CRC
    return bytes(raw)


async def read_records(bootstrap: str, topic: str, n: int, timeout_s: float = 30) -> list[Any]:
    """The first `n` records of `topic` from the beginning (fewer if `timeout_s` runs out),
    for tests that wait on outputs still being produced."""
    c = connection(bootstrap).consumer(
        topic, group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await c.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                out.extend(msgs)
    finally:
        await c.stop()
    return out


async def collect(
    bootstrap: str,
    topics: list[str],
    until: Callable[[dict[str, list[Any]]], bool],
    timeout_s: float,
) -> dict[str, list[Any]]:
    """Records of `topics` by topic, read from the beginning until `until(got)` holds or
    `timeout_s` runs out."""
    got: dict[str, list[Any]] = {t: [] for t in topics}
    c = connection(bootstrap).consumer(
        *topics, group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=20
    )
    await c.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(got):
            for tp, msgs in (await c.getmany(timeout_ms=250, max_records=5000)).items():
                got[tp.topic].extend(msgs)
    finally:
        await c.stop()
    return got
