"""The embedded dev stack: a Kafka broker (Tansu), Redis (or valkey-server) and MLflow.

``raylane dev up`` and the test fixtures use this package to start real local processes,
health-check them, and write ``$RAYLANE_HOME/stack.json`` for `raylane.settings.Settings`.
Environment variables point any component at an external service instead:
``RAYLANE_KAFKA_BOOTSTRAP``, ``REDIS_URL``, ``MLFLOW_TRACKING_URI``; local ports are set by
``RAYLANE_KAFKA_PORT`` (9092), ``RAYLANE_REDIS_PORT`` (6390), ``RAYLANE_MLFLOW_PORT`` (5000).

    from raylane.localstack import up, ensure_topics, down
    settings = up()
    ensure_topics(settings.kafka_bootstrap, ["payments.initiated"], partitions=4)
    down()
"""

from __future__ import annotations

from collections.abc import Iterable

from raylane.kafka.admin import ensure_topics, ensure_topics_async
from raylane.settings import Settings

from ._listeners import Listener, is_loopback, listeners
from ._session import session_stack
from ._stack import (
    COMPONENTS,
    ComponentStatus,
    OnEvent,
    StackEvent,
    down_locked,
    export_fallbacks,
    up_locked,
)
from ._stack import status as _status

__all__ = [
    "COMPONENT_NAMES",
    "ComponentStatus",
    "Listener",
    "StackEvent",
    "down",
    "ensure_topics",
    "ensure_topics_async",
    "is_loopback",
    "listeners",
    "session_stack",
    "status",
    "up",
]

#: Names accepted by ``up(components=...)``, in start order.
COMPONENT_NAMES: tuple[str, ...] = tuple(COMPONENTS)


def up(components: Iterable[str] | None = None, *, on_event: OnEvent | None = None) -> Settings:
    """Start (or reuse) the stack's components and return the settings to reach them.

    Idempotent: healthy components, ours or external, are reused. What is started stays
    up until `down`. ``components`` selects a subset of `COMPONENT_NAMES`; ``on_event``
    receives progress (`StackEvent`) for spinners. Raises `raylane.errors.StackError`
    with what to do when a component cannot be started or reached.
    """
    settings, _started = up_locked(components, persistent=True, on_event=on_event)
    export_fallbacks(settings)
    return settings


def down() -> None:
    """Stop every process of the stack we started (whole process groups) and forget it."""
    down_locked()


def status() -> list[ComponentStatus]:
    """Address, pid, health and ownership of each component."""
    return _status()
