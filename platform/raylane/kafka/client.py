"""The one Kafka client factory: every consumer, producer and admin client in raylane is made here.

The connection settings are read once (bootstrap servers from the environment or the embedded
stack's ``stack.json``, then the client options below), so the ingress, the drift monitor, the
action runner, the DLQ tools, promotion audit, the bench and the dev stack all connect the
same way, and a setting added here (TLS, SASL) reaches all of them.

Environment:

=================================  ==================================================
``RAYLANE_KAFKA_BOOTSTRAP``        bootstrap servers (see :class:`raylane.settings.Settings`)
``RAYLANE_KAFKA_IDEMPOTENCE``      ``true`` turns on the idempotent producer; off by default
                                   because the embedded broker grants no producer ids
=================================  ==================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from raylane.errors import ConfigError

__all__ = ["ENV_IDEMPOTENCE", "KafkaConnection", "connection"]

ENV_IDEMPOTENCE = "RAYLANE_KAFKA_IDEMPOTENCE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false", stage="config")


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach one Kafka cluster; makes its clients with the same settings every time."""

    bootstrap: str
    idempotence: bool = False

    @classmethod
    def from_env(cls, bootstrap: str | None = None) -> KafkaConnection:
        """Settings from the environment; `bootstrap` overrides the resolved bootstrap servers."""
        if bootstrap is None:
            from raylane.settings import Settings

            bootstrap = Settings.load().kafka_bootstrap
        return cls(bootstrap=bootstrap, idempotence=_flag(ENV_IDEMPOTENCE))

    def common(self) -> dict[str, Any]:
        """Options every client of this cluster takes (bootstrap, and security when set)."""
        return {"bootstrap_servers": self.bootstrap}

    def producer(self, *, client_id: str | None = None, **options: Any) -> AIOKafkaProducer:
        """An acks=all producer (not started). `options` override aiokafka's defaults."""
        kw: dict[str, Any] = {"acks": "all", "linger_ms": 1, "enable_idempotence": self.idempotence}
        if client_id is not None:
            kw["client_id"] = client_id
        kw.update(options)
        return AIOKafkaProducer(**self.common(), **kw)

    def consumer(
        self, *topics: str, client_id: str | None = None, **options: Any
    ) -> AIOKafkaConsumer:
        """A consumer (not started) of `topics`; manual commits unless `options` say otherwise."""
        kw: dict[str, Any] = {"enable_auto_commit": False}
        if client_id is not None:
            kw["client_id"] = client_id
        kw.update(options)
        return AIOKafkaConsumer(*topics, **self.common(), **kw)

    def client(self, **options: Any) -> AIOKafkaClient:
        """A low-level client (not bootstrapped), for metadata round trips (health checks)."""
        return AIOKafkaClient(**self.common(), **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        """An admin client (not started) for topic management."""
        return AIOKafkaAdminClient(**self.common(), **options)


def connection(target: str | KafkaConnection | None = None) -> KafkaConnection:
    """`target` as a connection: a connection, a bootstrap string, or None (the environment's)."""
    if isinstance(target, KafkaConnection):
        return target
    return KafkaConnection.from_env(target)
