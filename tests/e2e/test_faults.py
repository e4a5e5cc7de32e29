"""The fault suite's scenarios, short versions, against the fraud app on local Ray Serve.

One pipeline is deployed for the module (2 ingress replicas, Redis behind a fault proxy, a
webhook action); each test runs one scenario of :mod:`raylane.testing.scenarios` (the same
functions ``bench/faults.py`` runs at full size) and asserts its row: no valid event lost,
every poison record on the DLQ with the error class of its kind, no conflicting duplicate.
The promotion scenario runs last: it moves the rig's own champion alias.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raylane.testing.faults import FaultRig, FaultRow
from raylane.testing.scenarios import (
    POISON_KINDS,
    action_crash,
    kill_ingress,
    kill_model,
    overload,
    poison_mix,
    promotion,
    redis_down,
    redis_silent,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FRAUD = Path(__file__).resolve().parents[2] / "serve_configs" / "fraud.yaml"


@pytest.fixture(scope="module")
def rig(bootstrapped) -> Iterator[FaultRig]:  # type: ignore[no-untyped-def]
    with FaultRig.deploy(FRAUD, ingress_replicas=2) as r:
        yield r


def _check(row: FaultRow, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():  # the row is shown in CI's output
        rec = "-" if row.recover_s is None else f"{row.recover_s:.1f} s"
        print(
            f"\n{row.scenario}: produced {row.produced}, scored {row.scored}, lost {row.lost}, "
            f"duplicates {row.duplicates}, conflicting {row.conflicting}, "
            f"dlq {row.dlq}/{row.expected_dlq}, recovered in {rec}; {row.detail}"
        )
    assert row.produced > 0
    assert row.lost == 0, row
    assert row.scored == row.produced, row
    assert row.conflicting == 0, row
    assert row.wrong_class == 0, row
    assert row.dlq == row.expected_dlq, row


def test_ingress_replicas_sigkilled(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(kill_ingress(rig, events=2400, rate=300, kills=1), capsys)


def test_redis_stopped_then_back(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    row = redis_down(rig, events=2400, rate=200, outage_s=6)
    _check(row, capsys)
    assert row.recover_s is not None


def test_redis_that_never_answers(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(redis_silent(rig, events=2400, rate=200, outage_s=6), capsys)


def test_model_replica_sigkilled(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(kill_model(rig, events=2000, rate=200), capsys)


def test_overload_then_back_to_normal(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(overload(rig, rate=100, burst_rate=600, burst_s=5, calm_s=3), capsys)


def test_poison_mix(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    row = poison_mix(rig, events=2 * 100 * len(POISON_KINDS), rate=400, share=0.01)
    _check(row, capsys)
    assert row.expected_dlq == 2 * len(POISON_KINDS)  # two of every kind


def test_action_runner_sigkilled_mid_batch(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(action_crash(rig, events=1500, rate=200), capsys)


def test_promotion_mid_stream(rig: FaultRig, capsys) -> None:  # type: ignore[no-untyped-def]
    _check(promotion(rig, events=2000, rate=200), capsys)
