"""The README's managed-Kafka (SASL_SSL) example configures the client factory as it says."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from raylane.kafka.client import ENV_SECURITY, connection

README = Path(__file__).resolve().parents[3] / "README.md"


def _example() -> dict[str, str]:
    text = README.read_text()
    block = text.split("<!-- kafka-sasl-ssl-example -->", 1)[1].split("```bash", 1)[1]
    block = block.split("```", 1)[0]
    return dict(re.findall(r"^export (RAYLANE_[A-Z_]+)=(\S+)", block, re.MULTILINE))


async def test_readme_sasl_ssl_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _example()
    assert env["RAYLANE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for var in (*ENV_SECURITY.values(), "RAYLANE_KAFKA_IDEMPOTENCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAYLANE_HOME", str(tmp_path))
    secret = tmp_path / "kafka"  # stands in for /run/secrets/kafka
    secret.write_text("the-api-secret\n")
    env["RAYLANE_KAFKA_SASL_PASSWORD_FILE"] = str(secret)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    conn = connection()
    assert conn.bootstrap == env["RAYLANE_KAFKA_BOOTSTRAP"]
    assert conn.idempotence is True  # a managed Kafka grants producer ids
    opts = conn.common()
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "PLAIN"
    assert opts["sasl_plain_username"] == env["RAYLANE_KAFKA_SASL_USERNAME"]
    assert opts["sasl_plain_password"] == "the-api-secret"
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 0  # the system CAs (Confluent's are public)
    producer = conn.producer()
    assert producer.client._sasl_mechanism == "PLAIN"
    await producer.stop()
