"""Kafka TLS/SASL settings: parsing, validation at load, what reaches aiokafka, no leaks."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.abc import AbstractTokenProvider

from raylane.errors import ConfigError
from raylane.kafka.client import ENV_SECURITY, KafkaConnection, connection
from raylane.kafka.security import KafkaSecurity

P = "RAYLANE_KAFKA_SECURITY_PROTOCOL"
M = "RAYLANE_KAFKA_SASL_MECHANISM"
U = "RAYLANE_KAFKA_SASL_USERNAME"
PW = "RAYLANE_KAFKA_SASL_PASSWORD"
PWF = "RAYLANE_KAFKA_SASL_PASSWORD_FILE"
CA = "RAYLANE_KAFKA_SSL_CAFILE"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*ENV_SECURITY.values(), "RAYLANE_KAFKA_IDEMPOTENCE", "RAYLANE_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(var, raising=False)


def test_default_is_plaintext_without_tls_or_sasl() -> None:
    sec = KafkaSecurity.from_env({})
    assert sec.security_protocol == "PLAINTEXT"
    assert sec.client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_reaches_the_client_options(tmp_path: Path) -> None:
    sec = KafkaSecurity.from_env(
        {P: "sasl_ssl", M: "scram-sha-512", U: "svc-raylane", PW: "s3cret-pw"}
    )
    opts = sec.client_options()
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "svc-raylane"
    assert opts["sasl_plain_password"] == "s3cret-pw"
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True


def test_password_from_file_is_read_and_stripped(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-a-file\n")
    sec = KafkaSecurity.from_env({P: "SASL_SSL", M: "PLAIN", U: "key", PWF: str(f)})
    assert sec.client_options()["sasl_plain_password"] == "from-a-file"


def test_secrets_never_in_repr_or_connection_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P, "SASL_SSL")
    monkeypatch.setenv(M, "PLAIN")
    monkeypatch.setenv(U, "key")
    monkeypatch.setenv(PW, "hunter2-secret")
    conn = connection("broker:9093")
    assert conn.security.sasl_username == "key"
    for text in (repr(conn), str(conn), repr(conn.security), conn.security.model_dump_json()):
        assert "hunter2-secret" not in text


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({P: "SASL_SSL"}, [P, M]),  # SASL without a mechanism
        ({M: "PLAIN", U: "u", PW: "p"}, [M, P]),  # SASL settings on PLAINTEXT
        ({P: "SASL_SSL", M: "PLAIN", PW: "p"}, [U]),  # no user
        ({P: "SASL_SSL", M: "SCRAM-SHA-256", U: "u"}, [PW, PWF]),  # no password
        ({CA: "/etc/hosts", P: "PLAINTEXT"}, [CA, P]),  # TLS file without TLS
        ({P: "SASL_SSL", M: "OAUTHBEARER"}, ["RAYLANE_KAFKA_OAUTH_TOKEN_FILE"]),
        ({P: "TLS"}, [P]),  # not a protocol
        ({P: "SASL_SSL", M: "GSSAPI", U: "u", PW: "p"}, [M]),  # not supported
        ({P: "SSL", CA: "/nonexistent/ca.pem"}, [CA]),  # missing file
        ({P: "SSL", "RAYLANE_KAFKA_SSL_KEYFILE": "/etc/hosts"}, ["RAYLANE_KAFKA_SSL_CERTFILE"]),
        ({P: "SSL", "RAYLANE_KAFKA_SSL_CHECK_HOSTNAME": "perhaps"}, ["SSL_CHECK_HOSTNAME"]),
    ],
)
def test_bad_combinations_fail_at_load_naming_the_variable(
    env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as e:
        KafkaSecurity.from_env(env)
    for name in names:
        assert name in e.value.message


def test_bad_password_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as e:
        KafkaSecurity.from_env({M: "PLAIN", U: "u", PW: "very-secret-value"})
    assert "very-secret-value" not in e.value.message


def test_hostname_check_can_be_turned_off() -> None:
    sec = KafkaSecurity.from_env({P: "SSL", "RAYLANE_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    assert sec.ssl_context().check_hostname is False


def test_unreadable_pem_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="RAYLANE_KAFKA_SSL_CAFILE"):
        KafkaSecurity.from_env({P: "SSL", CA: str(bad)}).ssl_context()


def test_oauthbearer_reads_the_token_file_each_time(tmp_path: Path) -> None:
    import asyncio

    token = tmp_path / "token"
    token.write_text("t1")
    sec = KafkaSecurity.from_env(
        {P: "SASL_SSL", M: "OAUTHBEARER", "RAYLANE_KAFKA_OAUTH_TOKEN_FILE": str(token)}
    )
    provider = sec.client_options()["sasl_oauth_token_provider"]
    assert isinstance(provider, AbstractTokenProvider)
    assert asyncio.run(provider.token()) == "t1"
    token.write_text("t2\n")
    assert asyncio.run(provider.token()) == "t2"


async def test_every_client_kind_gets_the_security_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P, "SASL_PLAINTEXT")
    monkeypatch.setenv(M, "SCRAM-SHA-256")
    monkeypatch.setenv(U, "u")
    monkeypatch.setenv(PW, "p")
    conn = connection("127.0.0.1:1")
    producer = conn.producer()
    consumer = conn.consumer("t")
    for client in (producer.client, consumer._client, conn.client(), conn.admin()._client):
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-256"


# --- idempotence ---------------------------------------------------------------------------


def _stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    import json

    monkeypatch.setenv("RAYLANE_HOME", str(tmp_path))
    (tmp_path / "stack.json").write_text(json.dumps(settings))


def test_idempotence_is_on_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stack(tmp_path, monkeypatch)
    assert connection("broker:9092").idempotence is True
    assert KafkaConnection("broker:9092").idempotence is True


def test_embedded_stack_records_idempotence_off_for_its_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack(tmp_path, monkeypatch, kafka_bootstrap="127.0.0.1:9092", kafka_idempotence="false")
    assert connection().idempotence is False
    assert connection("127.0.0.1:9092").idempotence is False
    # another cluster is not the stack's broker: the default holds there
    assert connection("kafka.prod:9093").idempotence is True
    # and the environment names a different broker: stack.json says nothing about it
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", "kafka.prod:9093")
    assert connection().idempotence is True


async def test_environment_overrides_idempotence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack(tmp_path, monkeypatch, kafka_bootstrap="127.0.0.1:9092", kafka_idempotence="false")
    monkeypatch.setenv("RAYLANE_KAFKA_IDEMPOTENCE", "true")
    assert connection().idempotence is True
    monkeypatch.setenv("RAYLANE_KAFKA_IDEMPOTENCE", "false")
    assert connection("kafka.prod:9093").idempotence is False
    assert connection("kafka.prod:9093").producer()._txn_manager is None  # not idempotent
    monkeypatch.setenv("RAYLANE_KAFKA_IDEMPOTENCE", "maybe")
    with pytest.raises(ConfigError, match="RAYLANE_KAFKA_IDEMPOTENCE"):
        connection()
