"""raylane's log records reach the Serve replica's log handlers (no Ray needed)."""

from __future__ import annotations

import io
import logging
import logging.handlers
from collections.abc import Iterator

import pytest

from raylane.serving._host import route_logs_to_serve


@pytest.fixture
def serve_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    serve, ours = logging.getLogger("ray.serve"), logging.getLogger("raylane")
    kafka = logging.getLogger("aiokafka")
    saved = (serve.handlers[:], serve.level, ours.handlers[:], ours.level, ours.propagate)
    saved_kafka = (kafka.handlers[:], kafka.level, kafka.propagate)
    buf = io.StringIO()
    serve.handlers = [logging.StreamHandler(buf)]
    serve.setLevel(logging.WARNING)
    try:
        yield serve, buf
    finally:
        serve.handlers, serve.level = saved[0], saved[1]
        ours.handlers, ours.level, ours.propagate = saved[2], saved[3], saved[4]
        kafka.handlers, kafka.level, kafka.propagate = saved_kafka


def test_ingress_warnings_land_in_the_replica_log_once(serve_logger) -> None:  # type: ignore[no-untyped-def]
    _, buf = serve_logger
    route_logs_to_serve()
    route_logs_to_serve()  # a second replica class in the same process adds nothing twice
    logging.getLogger("raylane.ingest").warning("batch failed at window features (attempt 1)")
    logging.getLogger("raylane.ingest").info("below the serve config's log_level")
    assert buf.getvalue().splitlines() == ["batch failed at window features (attempt 1)"]
    assert logging.getLogger("raylane").propagate is False


def test_a_buffered_serve_file_handler_is_bypassed(serve_logger) -> None:  # type: ignore[no-untyped-def]
    """Serve's throughput mode puts its file handler behind a MemoryHandler (flushed every
    1,000 records): raylane's warnings must reach the file at once."""
    serve, _ = serve_logger
    file_like = io.StringIO()
    target = logging.StreamHandler(file_like)
    serve.handlers = [logging.handlers.MemoryHandler(capacity=1000, target=target)]
    route_logs_to_serve()
    logging.getLogger("raylane.pipeline").warning("poison record isolated")
    assert file_like.getvalue() == "poison record isolated\n"


def test_the_kafka_clients_warnings_reach_the_replica_log(serve_logger, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """aiokafka's own warnings (a failed commit, a lost coordinator) say why a replica stopped
    consuming; its INFO rebalance steps only with RAYLANE_KAFKA_LOG_LEVEL=INFO."""
    _, buf = serve_logger
    monkeypatch.delenv("RAYLANE_KAFKA_LOG_LEVEL", raising=False)
    route_logs_to_serve()
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.warning("Heartbeat failed for group g because it is rebalancing")
    coordinator.info("Joined group 'g' (generation 4)")
    assert buf.getvalue().splitlines() == ["Heartbeat failed for group g because it is rebalancing"]

    monkeypatch.setenv("RAYLANE_KAFKA_LOG_LEVEL", "info")
    route_logs_to_serve()
    coordinator.info("Joined group 'g' (generation 5)")
    assert buf.getvalue().splitlines()[-1] == "Joined group 'g' (generation 5)"
    assert logging.getLogger("aiokafka").propagate is False
