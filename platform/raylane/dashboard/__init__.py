"""The dashboard a person opens: shadow vs primary, pipeline health, drift, actions and models.

``raylane dashboard -f serve_configs/fraud.yaml`` (and ``make demo``) serve it on
127.0.0.1. It reads what the platform keeps (the replicas' Prometheus metrics, the shadow
aggregates and drift state in Redis, the drift reports, MLflow) and refreshes by itself.
It sits above :mod:`raylane.lifecycle` in the import layers (it shows the promotion gates),
so it is its own package rather than part of :mod:`raylane.monitoring`.
"""

from raylane.dashboard.collect import DashboardData
from raylane.dashboard.server import (
    ENV_PROMETHEUS,
    ENV_TOKEN,
    DashboardServer,
    check_bind,
    open_dashboard,
)

__all__ = [
    "ENV_PROMETHEUS",
    "ENV_TOKEN",
    "DashboardData",
    "DashboardServer",
    "check_bind",
    "open_dashboard",
]
