"""A SCRAM login that aiokafka fails with a bare KeyError/ValueError becomes a ConfigError that
names the user, the mechanism and the variables, and never the password."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import ScramAuthenticator

from raylane.errors import ConfigError
from raylane.kafka.client import ENV_SECURITY, KafkaConnection
from raylane.kafka.security import KafkaSecurity

SCRAM = KafkaSecurity(
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="svc-raylane",
    sasl_password="s3cret-pw",  # type: ignore[arg-type]
)


def _refused_login(server_final: str) -> Any:
    """A start() that runs aiokafka's own SCRAM step on a broker's refusal."""

    async def start(self: Any) -> None:
        scram = ScramAuthenticator(
            loop=None,
            sasl_plain_password="s3cret-pw",
            sasl_plain_username="svc-raylane",
            sasl_mechanism="SCRAM-SHA-512",
        )
        scram.process_server_final_message(server_final)

    return start


@pytest.mark.parametrize("server_final", ["e=invalid-proof", "e=unknown-user"])
async def test_a_refused_scram_login_names_user_mechanism_and_variables(
    monkeypatch: pytest.MonkeyPatch, server_final: str
) -> None:
    monkeypatch.setattr(AIOKafkaProducer, "start", _refused_login(server_final))
    producer = KafkaConnection("broker-1:9096", security=SCRAM).producer()
    with pytest.raises(ConfigError) as e:
        await producer.start()
    msg = str(e.value)
    assert "SASL authentication failed for user 'svc-raylane' with mechanism SCRAM-SHA-512" in msg
    assert "broker-1:9096" in msg
    for field in ("sasl_username", "sasl_password", "sasl_password_file", "sasl_mechanism"):
        assert ENV_SECURITY[field] in msg
    assert "s3cret-pw" not in msg
    assert isinstance(e.value.__cause__, KeyError) and e.value.retriable is False


async def test_a_wrong_server_signature_is_a_refused_login(monkeypatch: pytest.MonkeyPatch) -> None:
    async def start(self: Any) -> None:
        scram = ScramAuthenticator(
            loop=None,
            sasl_plain_password="pw",
            sasl_plain_username="u",
            sasl_mechanism="SCRAM-SHA-256",
        )
        scram._server_signature = b"expected"
        scram.process_server_final_message("v=d3Jvbmc=")

    monkeypatch.setattr(AIOKafkaConsumer, "start", start)
    consumer = KafkaConnection("b:9092", security=SCRAM).consumer("t")
    with pytest.raises(ConfigError, match="SASL authentication failed") as e:
        await consumer.start()
    assert isinstance(e.value.__cause__, ValueError)


async def test_the_client_and_admin_translate_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    monkeypatch.setattr(AIOKafkaClient, "bootstrap", _refused_login("e=invalid-proof"))
    monkeypatch.setattr(AIOKafkaAdminClient, "start", _refused_login("e=invalid-proof"))
    conn = KafkaConnection("b:9092", security=SCRAM)
    with pytest.raises(ConfigError, match="SASL authentication failed"):
        await conn.client().bootstrap()
    with pytest.raises(ConfigError, match="SASL authentication failed"):
        await conn.admin().start()


async def test_other_key_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    async def start(self: Any) -> None:
        raise KeyError("not from the login")

    monkeypatch.setattr(AIOKafkaProducer, "start", start)
    with pytest.raises(KeyError, match="not from the login"):
        await KafkaConnection("b:9092", security=SCRAM).producer().start()


async def test_without_sasl_nothing_is_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AIOKafkaProducer, "start", _refused_login("e=invalid-proof"))
    with pytest.raises(KeyError):
        await KafkaConnection("b:9092").producer().start()


async def test_raylane_paths_pass_the_refusal_on_instead_of_cannot_reach_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # EventProducer, read_topic and the sidecars wrap start() failures as a retriable
    # DependencyError ("cannot reach Kafka"); a refused login must stay a ConfigError.
    from raylane.contracts import Codec
    from raylane.kafka.producer import EventProducer
    from raylane.kafka.reader import read_topic

    monkeypatch.setattr(AIOKafkaProducer, "start", _refused_login("e=invalid-proof"))
    monkeypatch.setattr(AIOKafkaConsumer, "start", _refused_login("e=invalid-proof"))
    conn = KafkaConnection("b:9092", security=SCRAM)
    with pytest.raises(ConfigError, match="SASL authentication failed"):
        async with EventProducer(
            conn, "t", Codec.for_contract("payments.initiated"), key_field="user_id"
        ):
            pass
    with pytest.raises(ConfigError, match="SASL authentication failed"):
        await read_topic(conn, "t", 0.1, stage="test")
