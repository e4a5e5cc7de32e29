"""Liveness means progress: the ingress health check fails when the replica owns pending
input and commits nothing (no services, no Ray; the consumer is a stub with a clock)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition

from raylane.config import PipelineConfig
from raylane.errors import DependencyError
from raylane.ingest import consumer as consumer_mod
from raylane.ingest.consumer import IngressLoop
from raylane.monitoring.metrics import METRICS

ROOT = Path(__file__).resolve().parents[3]


class StubConsumer:
    """What the liveness check reads of an aiokafka consumer: assignment and high watermarks."""

    def __init__(self, highwater: dict[int, int]) -> None:
        self.high = highwater

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", p) for p in self.high}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp.partition)


class StubSink:
    async def start(self) -> None: ...

    async def write(self, records: Any) -> None: ...

    async def close(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(consumer_mod.time, "monotonic", c.monotonic)
    return c


def _loop(highwater: dict[int, int], stall_s: float = 60.0) -> IngressLoop:
    args = copy.deepcopy(
        yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["name"] = "liveness_test"
    args["ingress"]["stall_timeout_s"] = stall_s
    cfg = PipelineConfig.from_args(args)
    consumer: Any = StubConsumer(highwater)
    return IngressLoop(cfg, processor=None, consumer=consumer, sink=StubSink())  # type: ignore[arg-type]


def test_pending_input_without_commits_fails_health_after_the_stall_timeout(clock: Clock) -> None:
    loop = _loop({0: 50, 1: 10})
    loop._fetched_from.update({("t", 0): 20, ("t", 1): 10})  # partition 1 is caught up
    assert loop.lag() == {"t[0]": 30, "t[1]": 0}
    loop.check_health()  # just started
    clock.t += 59
    loop.check_health()
    clock.t += 2
    with pytest.raises(RuntimeError, match=r"stuck: 30 records pending .* no commit for 61 s"):
        loop.check_health()
    lab = {"pipeline": "liveness_test"}
    assert METRICS.seconds_since_commit.labels(**lab)._value.get() == 61
    assert METRICS.consumer_lag.labels(partition="t[0]", **lab)._value.get() == 30


def test_a_commit_or_an_empty_backlog_resets_the_clock(clock: Clock) -> None:
    loop = _loop({0: 50})
    loop._fetched_from[("t", 0)] = 0
    clock.t += 100
    loop._last_commit = clock.t  # what _commit records
    loop._committed[("t", 0)] = 50
    assert loop.lag() == {"t[0]": 0}
    clock.t += 1000
    loop.check_health()  # nothing pending: idle, not stuck
    loop._consumer.high[0] = 51  # type: ignore[union-attr]
    clock.t += 59
    loop.check_health()
    clock.t += 2
    with pytest.raises(RuntimeError, match="stuck: 1 records pending"):
        loop.check_health()


def test_waiting_out_a_dependency_outage_is_not_stuck(clock: Clock) -> None:
    loop = _loop({0: 50})
    loop._fetched_from[("t", 0)] = 0
    loop.stats.paused, loop._outage = True, True  # what _back_off sets for an outage
    clock.t += 10_000
    loop.check_health()
    loop._outage = False  # paused for a poison record's retries instead: that may not last
    with pytest.raises(RuntimeError, match="stuck"):
        loop.check_health()


def test_partitions_not_fetched_yet_are_not_judged(clock: Clock) -> None:
    loop = _loop({0: 50})
    clock.t += 10_000
    assert loop.lag() == {}
    loop.check_health()


def test_outage_flag_follows_the_last_failure() -> None:
    assert consumer_mod.is_outage(DependencyError("redis down"))
    assert not consumer_mod.is_outage(ValueError("bad record"))
