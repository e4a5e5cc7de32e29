"""The one Kafka client factory: every consumer, producer and admin client in raylane is made here.

The connection settings are read once (bootstrap servers from the environment or the embedded
stack's ``stack.json``, then the security and client options below), so the ingress, the drift
monitor, the action runner, the DLQ tools, promotion audit, the bench and the dev stack all
connect the same way, with the same TLS and SASL settings.

Environment (each replica reads these itself; none travels in Serve init args):

=====================================  ==========================================================
``RAYLANE_KAFKA_BOOTSTRAP``            bootstrap servers (see :class:`raylane.settings.Settings`)
``RAYLANE_KAFKA_SECURITY_PROTOCOL``    ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``,
                                       ``SASL_SSL``
``RAYLANE_KAFKA_SASL_MECHANISM``       ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``,
                                       ``OAUTHBEARER`` (SASL_* protocols only)
``RAYLANE_KAFKA_SASL_USERNAME``        SASL user (PLAIN / SCRAM)
``RAYLANE_KAFKA_SASL_PASSWORD``        SASL password; never logged
``RAYLANE_KAFKA_SASL_PASSWORD_FILE``   or a file holding it (a mounted secret)
``RAYLANE_KAFKA_OAUTH_TOKEN_FILE``     OAUTHBEARER: file with the token, re-read on each login
``RAYLANE_KAFKA_SSL_CAFILE``           PEM CA bundle for the brokers' certificates (system CAs
                                       when unset)
``RAYLANE_KAFKA_SSL_CERTFILE``         PEM client certificate (mTLS)
``RAYLANE_KAFKA_SSL_KEYFILE``          PEM key of that certificate, if not inside it
``RAYLANE_KAFKA_SSL_CHECK_HOSTNAME``   ``true`` (default) checks the broker certificate's name
``RAYLANE_KAFKA_IDEMPOTENCE``          idempotent producer: on by default; ``raylane dev up``
                                       records ``false`` for the embedded broker (Tansu grants
                                       no producer ids); set ``false`` for such brokers
=====================================  ==========================================================

Invalid combinations (SASL settings with ``PLAINTEXT``, a mechanism without credentials, a
missing file) fail at load with a :class:`~raylane.errors.ConfigError` naming the variable,
and so does a login the broker refuses, when the client starts (see :mod:`._login`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from raylane.errors import ConfigError
from raylane.kafka._login import login_errors
from raylane.kafka.security import ENV_SECURITY, KafkaSecurity
from raylane.settings import ENV_IDEMPOTENCE

__all__ = ["ENV_IDEMPOTENCE", "ENV_SECURITY", "KafkaConnection", "KafkaSecurity", "connection"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool | None:
    """The boolean in variable `name`; None when it is unset or empty."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return None if raw == "" else False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false", stage="config")


class _Producer(AIOKafkaProducer):
    raylane: KafkaConnection

    async def start(self) -> None:
        async with login_errors(self.raylane.security, self.raylane.bootstrap):
            await super().start()


class _Consumer(AIOKafkaConsumer):
    raylane: KafkaConnection

    async def start(self) -> None:
        async with login_errors(self.raylane.security, self.raylane.bootstrap):
            await super().start()


class _Client(AIOKafkaClient):
    raylane: KafkaConnection

    async def bootstrap(self) -> None:
        async with login_errors(self.raylane.security, self.raylane.bootstrap):
            await super().bootstrap()


class _Admin(AIOKafkaAdminClient):
    raylane: KafkaConnection

    async def start(self) -> None:
        async with login_errors(self.raylane.security, self.raylane.bootstrap):
            await super().start()


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach one Kafka cluster; makes its clients with the same settings every time."""

    bootstrap: str
    idempotence: bool = True
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, bootstrap: str | None = None) -> KafkaConnection:
        """Settings from the environment; `bootstrap` overrides the resolved bootstrap servers.

        Idempotence: ``RAYLANE_KAFKA_IDEMPOTENCE`` if set, else what the embedded stack
        recorded for its broker (when `bootstrap` is that broker), else on.
        """
        from raylane.settings import Settings

        settings = Settings.load()
        if bootstrap is None:
            bootstrap = settings.kafka_bootstrap
        idempotence = _flag(ENV_IDEMPOTENCE)
        if idempotence is None and bootstrap == settings.kafka_bootstrap:
            idempotence = settings.kafka_idempotence
        return cls(
            bootstrap=bootstrap,
            idempotence=True if idempotence is None else idempotence,
            security=KafkaSecurity.from_env(),
        )

    def common(self) -> dict[str, Any]:
        """Options every client of this cluster takes: bootstrap, TLS and SASL."""
        return {"bootstrap_servers": self.bootstrap, **self.security.client_options()}

    def producer(self, *, client_id: str | None = None, **options: Any) -> AIOKafkaProducer:
        """An acks=all producer (not started). `options` override aiokafka's defaults."""
        kw: dict[str, Any] = {"acks": "all", "linger_ms": 1, "enable_idempotence": self.idempotence}
        if client_id is not None:
            kw["client_id"] = client_id
        kw.update(options)
        producer = _Producer(**self.common(), **kw)
        producer.raylane = self
        return producer

    def consumer(
        self, *topics: str, client_id: str | None = None, **options: Any
    ) -> AIOKafkaConsumer:
        """A consumer (not started) of `topics`; manual commits unless `options` say otherwise."""
        kw: dict[str, Any] = {"enable_auto_commit": False}
        if client_id is not None:
            kw["client_id"] = client_id
        kw.update(options)
        consumer = _Consumer(*topics, **self.common(), **kw)
        consumer.raylane = self
        return consumer

    def client(self, **options: Any) -> AIOKafkaClient:
        """A low-level client (not bootstrapped), for metadata round trips (health checks)."""
        client = _Client(**self.common(), **options)
        client.raylane = self
        return client

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        """An admin client (not started) for topic management."""
        admin = _Admin(**self.common(), **options)
        admin.raylane = self
        return admin


def connection(target: str | KafkaConnection | None = None) -> KafkaConnection:
    """`target` as a connection: a connection, a bootstrap string, or None (the environment's)."""
    if isinstance(target, KafkaConnection):
        return target
    return KafkaConnection.from_env(target)
