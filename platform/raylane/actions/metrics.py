"""Prometheus metrics of the action layer (served with the rest by raylane.monitoring.metrics).

``raylane_actions_total{outcome}`` counts each (event, handler): ``done``, ``failed``
(given up: sent to the action DLQ), ``duplicate`` (already handled, skipped) and
``error`` (a dependency failed; the batch is retried). Retried webhook attempts and each
handler's breaker state have their own families.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["ACTION_METRICS", "ActionMetrics"]


class ActionMetrics:
    def __init__(self) -> None:
        self.actions = Counter(
            "raylane_actions_total",
            "Actions by handler and outcome.",
            ["pipeline", "handler", "outcome"],
        )
        self.retried = Counter(
            "raylane_action_retries_total", "Retried attempts (webhook).", ["pipeline", "handler"]
        )
        self.breaker_open = Gauge(
            "raylane_action_breaker_open",
            "1 while a handler's breaker is open.",
            ["pipeline", "handler"],
        )
        self.dlq = Counter(
            "raylane_action_dlq_total", "Records sent to an action DLQ.", ["pipeline", "topic"]
        )


#: Process-wide action metric families.
ACTION_METRICS = ActionMetrics()
