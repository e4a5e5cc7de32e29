"""Shared fixtures: the embedded stack, started once per session when a test needs it."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def stack():
    """Settings of a running embedded stack (broker, Redis, MLflow), started if needed.

    Reuses a healthy stack from `raylane dev up`; otherwise starts one and stops it
    at the end of the session. Honours RAYLANE_KAFKA_BOOTSTRAP / REDIS_URL /
    MLFLOW_TRACKING_URI like the CLI does.
    """
    from raylane.localstack import session_stack

    with session_stack() as settings:
        yield settings


@pytest.fixture(scope="session")
def redis_url(stack) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(stack) -> str:
    return stack.kafka_bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names and key prefixes of one test."""
    return uuid.uuid4().hex[:10]
