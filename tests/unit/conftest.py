"""Unit tests need no services and must not start Ray (Ray Serve's own unit-test rule)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a unit test that leaves Ray initialised: it belongs in tests/e2e."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(
            f"{request.node.nodeid} started Ray; unit tests must not (move it to tests/e2e)",
            pytrace=False,
        )
