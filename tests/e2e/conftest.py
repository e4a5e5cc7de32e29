"""E2E fixtures: a bootstrapped embedded stack and the fraud app on local Ray Serve.

Each module gets its own topics and consumer group, so tests never read each
other's events; the pipeline keeps its name (and so the backfilled window state).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


@pytest.fixture(scope="session")
def bootstrapped(stack):
    """Topics, Feast (apply + materialize), window backfill and registered models."""
    from raylane.bootstrap import bootstrap

    bootstrap(FRAUD, quiet=True)
    return stack


@pytest.fixture(scope="module")
def fraud_app(bootstrapped, request) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The fraud app deployed on local Ray with isolated topics (2 ingress replicas)."""
    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, isolated_topics

    suffix = (
        request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
        + "-"
        + __import__("uuid").uuid4().hex[:6]
    )
    args = isolated_args(FRAUD, suffix, num_replicas=2)
    ensure_topics(bootstrapped.kafka_bootstrap, isolated_topics(args), partitions=4)
    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        yield running, args
