"""A second Tansu broker for the listener tests (TLS, SASL), on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raylane.localstack._broker import broker_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def tansu(
    port: int, advertised: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Tansu listening on 127.0.0.1:`port`, advertising `advertised` (``host:port``), memory
    storage; `args` are more ``tansu broker`` options. Stopped on exit; a broker that does not
    listen within 20 s fails with its log."""
    with log.open("w") as out:
        broker = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                *("--listener-url", f"tcp://127.0.0.1:{port}"),
                *("--advertised-listener-url", f"tcp://{advertised}"),
                *("--storage-engine", "memory://tansu/"),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or broker.poll() is not None:
                        raise RuntimeError(
                            f"the test's Tansu broker did not start (exit {broker.poll()}): "
                            f"{log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.05)
            yield broker
        finally:
            broker.terminate()
            broker.wait(10)
