"""MLflow and Redis URLs with credentials are masked in the errors that name them."""

from __future__ import annotations

import pytest

from raylane.errors import DependencyError
from raylane.registry._mlflow import boundary, check_reachable


def test_unreachable_mlflow_error_masks_the_password() -> None:
    with pytest.raises(DependencyError) as e:
        check_reachable("http://ops:hunter2@127.0.0.1:1", timeout_s=1)
    assert "hunter2" not in e.value.message
    assert "http://ops:***@127.0.0.1:1" in e.value.message


def test_mlflow_boundary_masks_uri_and_error_text() -> None:
    with (
        pytest.raises(DependencyError) as e,
        boundary("loading fraud", "https://ops:hunter2@mlflow.prod"),
    ):
        raise ConnectionError("could not reach https://ops:hunter2@mlflow.prod/api/2.0")
    assert "hunter2" not in e.value.message and "ops:***@mlflow.prod" in e.value.message


def test_bad_redis_url_health_masks_the_password() -> None:
    from raylane.localstack._redis import redis_health

    health = redis_health("redis://:hunter2@[bad", timeout_s=0.5)
    assert not health.ok and "hunter2" not in health.detail
