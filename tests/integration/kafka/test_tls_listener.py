"""raylane's Kafka clients through a TLS listener, with a CA generated in the test.

The embedded broker (Tansu 0.6) speaks no TLS, so a second Tansu is started whose advertised
listener is a TLS-terminating proxy run here: metadata sends every client to the TLS port, and
nothing reaches the broker unencrypted. The clients are configured only through the
``RAYLANE_KAFKA_*`` variables, as a replica would be: a producer and consumer, the ingress loop
(a bad event to the DLQ, good ones scored), the DLQ tools (``raylane dlq inspect`` and
``replay``) and the action runner.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raylane.errors import ConfigError
from raylane.kafka.client import connection
from raylane.testing.proxy import relay

from ._listener_checks import dlq_cli_reads_and_replays, ingress_dead_letters_and_scores
from ._tansu import free_port, tansu
from ._tls import GeneratedCA, make_ca

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[3]


class TlsProxy:
    """Accepts TLS on 127.0.0.1 (its own event loop in a thread) and forwards to a plain port."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.upstream = 0
        self.handshakes = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx), self.loop
        ).result(10)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # the TLS handshake has completed when this runs
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return

        await asyncio.gather(relay(reader, up_w), relay(up_r, writer))

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    ca: GeneratedCA
    proxy: TlsProxy

    def env(self) -> dict[str, str]:
        return {
            "RAYLANE_KAFKA_BOOTSTRAP": self.bootstrap,
            "RAYLANE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "RAYLANE_KAFKA_SSL_CAFILE": str(self.ca.ca),
            "RAYLANE_KAFKA_IDEMPOTENCE": "false",  # Tansu grants no producer ids
        }


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    ca = make_ca(tmp_path_factory.mktemp("tls"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(ca.cert, ca.key)
    proxy = TlsProxy(server_ctx)
    tls_port = proxy.start()
    proxy.upstream = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    try:
        with tansu(proxy.upstream, f"localhost:{tls_port}", log):
            yield TlsBroker(f"localhost:{tls_port}", ca, proxy)
    finally:
        proxy.stop()


@pytest.fixture
def tls_env(tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch) -> TlsBroker:
    for k, v in tls_broker.env().items():
        monkeypatch.setenv(k, v)
    return tls_broker


async def test_producer_and_consumer_connect_through_tls(tls_env: TlsBroker, unique: str) -> None:
    conn = connection()
    assert conn.bootstrap == tls_env.bootstrap and conn.security.tls
    before = tls_env.proxy.handshakes
    topic = f"tls.{unique}"
    producer = conn.producer()
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = conn.consumer(
        topic, group_id=f"tls-{unique}", auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                got += [m.value for m in batch if m.value is not None]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == [b"v0", b"v1", b"v2"]
    assert tls_env.proxy.handshakes > before  # every connection went through the TLS port


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_env: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_ca(tmp_path / "other")
    monkeypatch.setenv("RAYLANE_KAFKA_SSL_CAFILE", str(other.ca))
    client = connection().client(request_timeout_ms=2000)
    with pytest.raises(Exception) as e:
        await asyncio.wait_for(client.bootstrap(), 15)
    await client.close()
    assert "Unable to bootstrap" in str(e.value) or isinstance(e.value, OSError | TimeoutError)


async def test_a_plaintext_client_gets_no_metadata(
    tls_env: TlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYLANE_KAFKA_SECURITY_PROTOCOL")
    monkeypatch.delenv("RAYLANE_KAFKA_SSL_CAFILE")
    client = connection().client(request_timeout_ms=2000)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's error type varies by where it fails
        await asyncio.wait_for(client.bootstrap(), 15)
    await client.close()


def test_a_tls_setting_with_plaintext_fails_naming_the_fix(
    tls_env: TlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYLANE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ConfigError, match=r"RAYLANE_KAFKA_SSL_CAFILE.*set .*SSL"):
        connection()


async def test_ingress_dead_letters_and_scores_through_tls(
    stack: Any, tls_env: TlsBroker, unique: str
) -> None:
    await ingress_dead_letters_and_scores(unique)


def test_dlq_cli_reads_and_replays_through_tls(stack: Any, tls_env: TlsBroker, unique: str) -> None:
    dlq_cli_reads_and_replays(unique, "tlscli")


async def test_action_runner_consumes_and_publishes_through_tls(
    stack: Any, tls_env: TlsBroker, unique: str
) -> None:
    from types import SimpleNamespace

    from raylane.contracts import Codec
    from raylane.kafka.reader import read_topic
    from tests.integration.actions.test_runner import _cfg, _flagged, _Hook, _run

    hook = _Hook(fail=0)
    try:
        cfg = _cfg(unique, hook.url, attempts=2)
        events = _flagged(2, cfg.name)
        tls_stack = SimpleNamespace(kafka_bootstrap=tls_env.bootstrap, redis_url=stack.redis_url)
        runner = await _run(cfg, tls_stack, [events])
    finally:
        hook.server.shutdown()
    # two events, two handlers each (webhook, publish)
    assert runner.stats["done"] == 4 and runner.stats["failed"] == 0
    assert sorted(b["event"]["event_id"] for b in hook.ok()) == sorted(
        e["event_id"] for e in events
    )
    blocked = await read_topic(connection(), f"payments.blocked.{unique}", 1.0, stage="actions")
    codec = Codec.for_contract("payments.blocked")
    assert sorted(codec.decode(m.value)["event_id"] for m in blocked) == sorted(
        e["event_id"] for e in events
    )
