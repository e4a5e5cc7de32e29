"""E2E fixtures: a bootstrapped embedded stack and the fraud app on local Ray Serve.

Each module gets its own topics and consumer group, so tests never read each
other's events; the pipeline keeps its name (and so the backfilled window state).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


@pytest.fixture(scope="session")
def bootstrapped(stack):
    """Topics, Feast (apply + materialize), window backfill and registered models."""
    from raylane.bootstrap import bootstrap

    bootstrap(FRAUD, quiet=True)
    return stack


def isolated_args(suffix: str, **ingress: Any) -> dict[str, Any]:
    """The fraud pipeline's args with every topic and the group made unique."""
    args = copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])
    args["input"]["topic"] = f"payments.initiated.{suffix}"
    args["ingress"]["group_id"] = f"raylane-fraud-{suffix}"
    args["ingress"].update(ingress)
    for out in args["outputs"].values():
        out["topic"] = f"{out['topic']}.{suffix}"
    for rule in args["decision"]["rules"]:
        if rule.get("publish"):
            rule["publish"]["topic"] = f"{rule['publish']['topic']}.{suffix}"
    return args


def all_topics(args: dict[str, Any]) -> list[str]:
    topics = [args["input"]["topic"], args["input"]["topic"] + ".dlq"]
    topics += [o["topic"] for o in args["outputs"].values()]
    topics += [r["publish"]["topic"] for r in args["decision"]["rules"] if r.get("publish")]
    return topics


@pytest.fixture(scope="module")
def fraud_app(bootstrapped, request) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The fraud app deployed on local Ray with isolated topics (2 ingress replicas)."""
    from raylane.localstack import ensure_topics
    from raylane.serving.runtime import run_pipeline

    suffix = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-") + "-" + __import__("uuid").uuid4().hex[:6]
    args = isolated_args(suffix, num_replicas=2)
    ensure_topics(bootstrapped.kafka_bootstrap, all_topics(args), partitions=4)
    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        yield running, args
