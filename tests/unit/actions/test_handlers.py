"""Action handlers and config without services (httpx's mock transport, an in-memory sender)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from raylane.actions import ActionEvent, ActionFailed, PublishHandler, WebhookHandler
from raylane.config import PipelineConfig, PublishAction, WebhookAction
from raylane.contracts import Codec
from raylane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _ev(i: int = 0) -> ActionEvent:
    event = {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "pipeline": "fraud",
        "user_id": "u00001",
        "merchant_id": "m0001",
        "merchant_category": "crypto",
        "amount": 10.0,
        "currency": "EUR",
        "event_time": 1,
        "score": 0.9,
        "decision": "flagged",
        "rule": "high_risk",
        "model_name": "fraud",
        "model_version": "1",
        "flagged_at": 2,
    }
    return ActionEvent("payments.flagged", event, f"c{i}")


def _webhook(statuses: list[int], **spec: Any) -> tuple[WebhookHandler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    cfg = WebhookAction(
        type="webhook", url="http://hooks.invalid/x", backoff_s=0.001, backoff_max_s=0.002, **spec
    )
    return WebhookHandler(
        cfg, f"p{id(seen)}", httpx.AsyncClient(transport=httpx.MockTransport(respond))
    ), seen


async def test_webhook_retries_server_errors_then_succeeds() -> None:
    h, seen = _webhook([503, 502, 200], attempts=4)
    await h.run(_ev())
    assert len(seen) == 3
    assert (
        seen[-1].headers["x-correlation-id"] == "c0" and seen[-1].headers["idempotency-key"] == "e0"
    )


async def test_webhook_gives_up_after_its_attempts_and_then_its_breaker_opens() -> None:
    h, seen = _webhook([500], attempts=2, breaker={"fail_max": 2, "reset_timeout_s": 60})
    with pytest.raises(ActionFailed, match="after 2 attempts: HTTP 500"):
        await h.run(_ev(0))
    with pytest.raises(ActionFailed, match="breaker is now open"):
        await h.run(_ev(1))
    with pytest.raises(ActionFailed, match="circuit breaker open"):
        await h.run(_ev(2))
    assert len(seen) == 4  # the third event made no attempt


async def test_webhook_does_not_retry_a_rejection() -> None:
    h, seen = _webhook([422], attempts=5)
    with pytest.raises(ActionFailed, match="rejected the event: HTTP 422"):
        await h.run(_ev())
    assert len(seen) == 1


async def test_publish_derives_an_event_under_its_contract() -> None:
    sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def send(
        topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        sent.append((topic, key, value, headers))

    spec = PublishAction(
        type="publish",
        output={"topic": "payments.blocked", "contract": "payments.blocked"},
        set={"reason": "test"},
        time_field="blocked_at",
    )
    codec = Codec.for_contract("payments.blocked")
    await PublishHandler(spec, codec, send, "user_id").run(_ev(3))
    [(topic, key, value, headers)] = sent
    doc = codec.decode(value)
    assert topic == "payments.blocked" and key == b"u00001"
    assert doc["event_id"] == "e3" and doc["correlation_id"] == "c3" and doc["reason"] == "test"
    assert dict(headers)["raylane.correlation_id"] == b"c3"


async def test_publish_with_a_field_the_event_lacks_is_an_action_failure() -> None:
    async def send(*a: Any) -> None:
        raise AssertionError("nothing may be sent")

    spec = PublishAction(type="publish", output={"topic": "x", "contract": "payments.blocked"})
    ev = _ev()
    del ev.event["score"]
    with pytest.raises(ActionFailed, match=r"payments.blocked event is invalid"):
        await PublishHandler(spec, Codec.for_contract("payments.blocked"), send, "user_id").run(ev)


def _args() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "serve_configs" / "fraud.yaml").read_text())
    return copy.deepcopy(doc["applications"][0]["args"])


def test_actions_config_validates_handlers_and_names_the_path() -> None:
    args = _args()
    cfg = PipelineConfig.from_args(args)
    assert cfg.actions is not None and cfg.actions.topics[0].dlq == "payments.flagged.actions.dlq"
    args["actions"]["topics"][0]["handlers"].append(
        {"type": "update_profile", "view": "v", "entity_field": "k", "feature": "f"}
    )
    with pytest.raises(
        ConfigError, match=r"handler names \['update_profile'\] are used more than once"
    ):
        PipelineConfig.from_args(args)
    args = _args()
    args["actions"]["topics"][0]["handlers"] = [{"type": "webhook", "url": "ftp://x"}]
    with pytest.raises(
        ConfigError, match=r"args\.actions\.topics\[0\]\.handlers\[0\]\.webhook\.url"
    ):
        PipelineConfig.from_args(args)
    args["actions"]["topics"][0]["handlers"] = [{"type": "email"}]
    with pytest.raises(ConfigError, match=r"args\.actions\.topics\[0\]\.handlers\[0\]"):
        PipelineConfig.from_args(args)


def test_isolated_args_give_the_monitors_their_own_topics_and_groups() -> None:
    from raylane.testing.kafka import isolated_args

    cfg = PipelineConfig.from_args(isolated_args(ROOT / "serve_configs" / "fraud.yaml", "t1"))
    assert cfg.drift is not None and cfg.actions is not None
    assert cfg.drift.output.topic == "model.drift.t1" and cfg.drift.group_id == "fraud-drift-t1"
    t = cfg.actions.topics[0]
    assert t.topic == "payments.flagged.t1" and t.dlq == "payments.flagged.t1.actions.dlq"
    assert cfg.actions.group_id == "fraud-actions-t1"
    publish = [h for h in t.handlers if isinstance(h, PublishAction)]
    assert publish and publish[0].output.topic == "payments.blocked.t1"
