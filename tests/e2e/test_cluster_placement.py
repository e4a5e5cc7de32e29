"""Placement through the config on a two-node Ray cluster (ray.cluster_utils.Cluster).

The head node offers custom resource ``zone_a``, the worker ``zone_b``; the config puts
the primary on zone_a and the shadow on zone_b (``ray_actor_options.resources``). The
pipeline still scores end to end: every event on payments.scored and fraud.shadow.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from raylane.contracts import Codec
from raylane.kafka.producer import EventProducer
from raylane.settings import Settings
from raylane.testing import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
N = 300


async def _ids(
    bootstrap: str, topic: str, contract: str, want: set[str], timeout_s: float
) -> set[str]:
    codec = Codec.for_contract(contract)
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await c.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not want <= seen:
            for msgs in (await c.getmany(timeout_ms=250)).values():
                seen.update(codec.decode(m.value)["event_id"] for m in msgs)
    finally:
        await c.stop()
    return seen


async def _send(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    async with EventProducer(
        bootstrap, topic, Codec.for_contract("payments.initiated"), key_field="user_id"
    ) as p:
        await p.send_many(events)


def test_primary_and_shadow_run_on_the_nodes_the_config_names(bootstrapped) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, isolated_topics, place_models

    stack = bootstrapped
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"zone_a": 4},
            "object_store_memory": 150 * 1024 * 1024,
        },
    )
    worker = cluster.add_node(
        num_cpus=2, resources={"zone_b": 4}, object_store_memory=150 * 1024 * 1024
    )
    cluster.wait_for_nodes()
    try:
        ray.init(
            address=cluster.address,
            runtime_env={"env_vars": Settings.load().as_env()},
            include_dashboard=False,
            log_to_driver=False,
        )
        head_id = ray.get_runtime_context().get_node_id()
        args = isolated_args(FRAUD, f"cl-{uuid.uuid4().hex[:8]}", num_replicas=1)
        place_models(args, "deployment")  # models on nodes of their own
        args["ingress"]["ray_actor_options"] = {"num_cpus": 0.25, "resources": {"zone_a": 1}}
        args["models"]["primary"]["ray_actor_options"] = {
            "num_cpus": 0.25,
            "resources": {"zone_a": 1},
        }
        args["models"]["shadows"][0]["ray_actor_options"] = {
            "num_cpus": 0.25,
            "resources": {"zone_b": 1},
        }
        # the Serve-side batching and the prediction cache ride along on this run
        args["models"]["primary"]["batching"] = {"max_batch_size": 4, "batch_wait_timeout_s": 0.005}
        args["models"]["shadows"][0]["cache"] = {"ttl_s": 60, "max_entries": 10_000}
        ensure_topics(stack.kafka_bootstrap, isolated_topics(args), partitions=2)
        meta = json.loads((Settings.load().home / "world-fraud.json").read_text())
        events = [
            le.event
            for le in World(seed=meta["seed"], n_users=meta["users"])
            .stream(rate=100, seed=5)
            .take(N)
        ]
        ids = {e["event_id"] for e in events}
        with run_pipeline(FRAUD, overrides=args) as running:
            running.wait_assigned()
            primary = running.model("champion").info.remote().result(timeout_s=60)
            shadow = running.model("challenger").info.remote().result(timeout_s=60)
            print(
                f"primary on node {primary['node_id'][:12]}, "
                f"shadow on node {shadow['node_id'][:12]}"
            )
            assert primary["node_id"] == head_id
            assert shadow["node_id"] == worker.node_id and shadow["node_id"] != primary["node_id"]
            asyncio.run(_send(stack.kafka_bootstrap, args["input"]["topic"], events))
            scored = asyncio.run(
                _ids(
                    stack.kafka_bootstrap,
                    args["outputs"]["scored"]["topic"],
                    "payments.scored",
                    ids,
                    180,
                )
            )
            compared = asyncio.run(
                _ids(
                    stack.kafka_bootstrap,
                    args["outputs"]["shadow"]["topic"],
                    "fraud.shadow",
                    ids,
                    120,
                )
            )
            shadow_after = running.model("challenger").info.remote().result(timeout_s=60)
        assert scored == ids
        assert compared == ids
        cache = shadow_after["cache"]
        print(f"shadow cache: {cache}")
        assert (
            cache is not None and cache["hits"] + cache["misses"] >= N
        )  # every compared event was looked up
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
