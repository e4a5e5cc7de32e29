"""raylane's Kafka clients over SASL (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN), configured only
through the ``RAYLANE_KAFKA_*`` variables, as a replica would be.

Two brokers. The embedded Tansu 0.6 started with ``--authentication`` really requires a
login, but logs nobody in: its object store keeps no SCRAM credentials (``tansu user create``
answers success and writes nothing), it offers no PLAIN, and it has no OAUTHBEARER validator.
Against it the tests check what a refused login looks like to raylane. For logins that
succeed, a plain Tansu sits behind a SASL listener run here (``_sasl.SaslProxy``: the scramp
library's SCRAM server, and PLAIN), advertised in metadata, so every client connection logs in
before it reaches the broker: a producer and consumer per mechanism, the ingress loop, the DLQ
tools, and a wrong password, refused with nothing written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from raylane.errors import ConfigError
from raylane.kafka.client import KafkaConnection, connection

from ._listener_checks import dlq_cli_reads_and_replays, ingress_dead_letters_and_scores
from ._sasl import SaslProxy
from ._tansu import free_port, tansu

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

USER, PASSWORD = "svc-raylane", "pw-for-the-sasl-test"
SCRAM = ["SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class SaslBroker:
    bootstrap: str  # the SASL listener
    upstream: str  # the broker behind it, plaintext: what reached it, without logging in
    proxy: SaslProxy


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    proxy = SaslProxy({USER: PASSWORD})
    port = proxy.start()
    proxy.upstream = free_port()
    log = tmp_path_factory.mktemp("tansu-sasl") / "tansu.log"
    try:
        with tansu(proxy.upstream, f"127.0.0.1:{port}", log):
            yield SaslBroker(f"127.0.0.1:{port}", f"127.0.0.1:{proxy.upstream}", proxy)
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def tansu_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded Tansu with ``--authentication``: every client must log in."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu-auth") / "tansu.log"
    with tansu(port, f"127.0.0.1:{port}", log, "--authentication"):
        yield f"127.0.0.1:{port}"


def _sasl_env(
    monkeypatch: pytest.MonkeyPatch,
    bootstrap: str,
    mechanism: str,
    password: str = PASSWORD,
    protocol: str = "SASL_PLAINTEXT",
) -> None:
    for k, v in {
        "RAYLANE_KAFKA_BOOTSTRAP": bootstrap,
        "RAYLANE_KAFKA_SECURITY_PROTOCOL": protocol,
        "RAYLANE_KAFKA_SASL_MECHANISM": mechanism,
        "RAYLANE_KAFKA_SASL_USERNAME": USER,
        "RAYLANE_KAFKA_SASL_PASSWORD": password,
        "RAYLANE_KAFKA_IDEMPOTENCE": "false",  # Tansu grants no producer ids
    }.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def scram_env(sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch) -> SaslBroker:
    _sasl_env(monkeypatch, sasl_broker.bootstrap, "SCRAM-SHA-512")
    return sasl_broker


async def _upstream_topics(broker: SaslBroker) -> set[str]:
    """The broker's topics, asked directly (its metadata sends clients to the listener)."""
    client = KafkaConnection(broker.upstream).client(request_timeout_ms=5000)
    try:
        await client.bootstrap()  # a metadata request for every topic
        return set(client.cluster.topics())
    finally:
        await client.close()


@pytest.mark.parametrize("mechanism", [*SCRAM, "PLAIN"])
async def test_producer_and_consumer_log_in(
    sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch, unique: str, mechanism: str
) -> None:
    _sasl_env(monkeypatch, sasl_broker.bootstrap, mechanism)
    conn = connection()
    assert conn.security.sasl_mechanism == mechanism
    before = sasl_broker.proxy.logins[(mechanism, USER)]
    topic = f"sasl.{unique}"
    producer = conn.producer()
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    # no group: a group join costs seconds on Tansu (the ingress loop below runs in one)
    consumer = conn.consumer(topic, auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                got += [m.value for m in batch if m.value is not None]
    finally:
        await consumer.stop()
    assert got == [b"v0", b"v1", b"v2"]
    assert sasl_broker.proxy.logins[(mechanism, USER)] > before  # each connection logged in


@pytest.mark.parametrize("mechanism", [*SCRAM, "PLAIN"])
async def test_a_wrong_password_is_refused_by_name_and_nothing_is_written(
    sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch, unique: str, mechanism: str
) -> None:
    topic = f"saslbad.{unique}"
    _sasl_env(monkeypatch, sasl_broker.bootstrap, mechanism)
    control = connection().producer()  # a topic written with the right password is listed
    await control.start()
    try:
        await control.send_and_wait(f"{topic}.ok", b"v")
    finally:
        await control.stop()
    monkeypatch.setenv("RAYLANE_KAFKA_SASL_PASSWORD", "not-the-password")
    producer = connection().producer(request_timeout_ms=5000)
    with pytest.raises(ConfigError) as e:
        try:
            await producer.start()
            await producer.send_and_wait(topic, b"must not arrive")
        finally:
            await producer.stop()
    msg = str(e.value)
    assert f"SASL authentication failed for user '{USER}' with mechanism {mechanism}" in msg
    assert "RAYLANE_KAFKA_SASL_PASSWORD" in msg and "not-the-password" not in msg
    topics = await _upstream_topics(sasl_broker)
    assert f"{topic}.ok" in topics and topic not in topics


async def test_a_client_that_does_not_log_in_gets_nothing(
    sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", sasl_broker.bootstrap)
    before = sasl_broker.proxy.refused
    client = connection().client(request_timeout_ms=2000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(client.bootstrap(), 15)
    await client.close()
    assert sasl_broker.proxy.refused > before


async def test_ingress_dead_letters_and_scores_over_sasl(
    stack: Any, scram_env: SaslBroker, unique: str
) -> None:
    await ingress_dead_letters_and_scores(unique)


def test_dlq_cli_reads_and_replays_over_sasl(
    stack: Any, scram_env: SaslBroker, unique: str
) -> None:
    dlq_cli_reads_and_replays(unique, "saslcli")


@pytest.mark.parametrize("mechanism", SCRAM)
async def test_tansu_refuses_a_scram_login_and_raylane_says_so(
    tansu_auth: str, monkeypatch: pytest.MonkeyPatch, mechanism: str
) -> None:
    # Tansu refuses inside the last SCRAM message (e=unknown-user, error code 0), which
    # aiokafka 0.14 alone reports as KeyError('v').
    _sasl_env(monkeypatch, tansu_auth, mechanism)
    producer = connection().producer(request_timeout_ms=5000)
    with pytest.raises(ConfigError) as e:
        try:
            await producer.start()
        finally:
            await producer.stop()
    assert f"for user '{USER}' with mechanism {mechanism} at {tansu_auth}" in str(e.value)
    assert isinstance(e.value.__cause__, KeyError)


async def test_tansu_closes_a_plain_login(tansu_auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tansu offers SCRAM-SHA-256/512 and OAUTHBEARER; asked for PLAIN it closes the connection
    # instead of answering UNSUPPORTED_SASL_MECHANISM, so this stays aiokafka's error.
    _sasl_env(monkeypatch, tansu_auth, "PLAIN")
    consumer = connection().consumer("any", request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        try:
            await consumer.start()
        finally:
            await consumer.stop()


async def test_tansu_gives_a_client_without_sasl_no_metadata(
    tansu_auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", tansu_auth)
    client = connection().client(request_timeout_ms=2000)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's error type varies by where it fails
        await asyncio.wait_for(client.bootstrap(), 15)
    await client.close()
