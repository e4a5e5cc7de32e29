"""Promotion and rollback of a pipeline's primary model: gates, alias moves, audit.

``promote`` moves the champion alias (the primary's ``models:/<name>@<alias>``) to the
challenger (or a given version) after checking the gates of the config's ``promotion``
section against the live shadow aggregates; the replaced champion keeps the
``previous`` alias. ``rollback`` moves champion back to ``previous`` through the same
path (not gated). Every move is audited twice: a JSON tag on the registered model in
MLflow (``raylane.history.<ms>``, plus tags on the version) and a ``models.promoted``
event on Kafka. Running replicas notice the alias move by polling and hot-swap.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from raylane.config import PipelineConfig
from raylane.errors import ConfigError, ModelError, RaylaneError
from raylane.lifecycle.approval import (
    approval_tag,
    approved_record,
    promotion_key,
    record_tag,
    sign,
)
from raylane.lifecycle.audit import at_ms, publish_audit, read_audit_topic
from raylane.lifecycle.gates import (
    DriftCheck,
    DriftStatus,
    GateResult,
    RedisDriftCheck,
    evaluate_gates,
)
from raylane.lifecycle.shadow_stats import ShadowAggregate, ShadowStore
from raylane.registry._mlflow import boundary, client, is_not_found, resolve_tracking_uri

__all__ = [
    "HISTORY_TAG",
    "GatesFailed",
    "PromotionOutcome",
    "default_actor",
    "history",
    "promote",
    "rollback",
    "set_shadow",
    "sign_aliases",
]

HISTORY_TAG = "raylane.history."


class GatesFailed(RaylaneError):
    """One or more promotion gates failed; ``gates`` holds every result."""

    default_stage = "promotion"

    def __init__(self, message: str, gates: list[GateResult]) -> None:
        super().__init__(message)
        self.gates = gates


@dataclass
class PromotionOutcome:
    event: dict[str, Any]
    gates: list[GateResult] = field(default_factory=list)
    aggregate: ShadowAggregate | None = None


def default_actor() -> str:
    """Who is acting: $RAYLANE_ACTOR, else user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("RAYLANE_ACTOR") or f"{user}@{socket.gethostname()}"


def _champion(cfg: PipelineConfig) -> tuple[str, str]:
    m = cfg.models.primary
    if m.alias is None:
        raise ConfigError(
            f"models.primary.uri is {m.uri!r}, pinned to a version; promotion moves aliases, so "
            f"serve models:/{m.registered_name}@champion and promote to that alias",
            stage="promotion",
        )
    return m.registered_name, m.alias


def _alias_version(c: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if is_not_found(e):
            return None
        raise


def promote(
    cfg: PipelineConfig,
    *,
    version: int | None = None,
    force: bool = False,
    reason: str = "",
    actor: str | None = None,
    drift_check: DriftCheck | Callable[[str], DriftStatus | None] | None = None,
    store: ShadowStore | None = None,
    tracking_uri: str | None = None,
    publish: bool = True,
) -> PromotionOutcome:
    """Gate, then move the champion alias to the challenger (or `version`); audit the move.

    Raises GatesFailed (nothing moved) when a gate fails and `force` is not set.
    """
    from raylane.settings import Settings

    if force and not reason.strip():
        raise ConfigError(
            '--force needs --reason "why"; the reason is recorded in the audit trail',
            stage="promotion",
        )
    settings = Settings.load()
    name, champion = _champion(cfg)
    pcfg = cfg.promotion
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"promoting {name}", tu, name=name):
        current = _alias_version(c, name, champion)
        if version is None:
            target = _alias_version(c, name, pcfg.challenger_alias)
            if target is None:
                raise ModelError(
                    f"registered model {name} has no alias {pcfg.challenger_alias}; "
                    f"register a challenger or pass --version N",
                    stage="promotion",
                )
        else:
            target = str(c.get_model_version(name, str(version)).version)
    if target == current:
        raise ModelError(
            f"{name} v{target} is already {champion}; nothing to promote", stage="promotion"
        )
    shadow = cfg.gating_shadow()
    store = store or ShadowStore(settings.redis_url)
    agg = store.aggregate(cfg.name, shadow.name, pcfg.window) if shadow else ShadowAggregate("none")
    gates = evaluate_gates(
        cfg.name,
        agg,
        pcfg,
        drift_check if drift_check is not None else RedisDriftCheck(settings.redis_url),
    )
    gates.insert(
        0,
        GateResult(
            "shadow_is_target",
            target,
            agg.shadow_version or None,
            agg.shadow_version == target,
            f"the gated shadow {agg.shadow} must have scored v{target}",
        ),
    )
    failed = [g for g in gates if not g.passed]
    if failed and not force:
        raise GatesFailed(
            f"promotion of {name} v{target} refused: "
            + "; ".join(g.describe() for g in failed)
            + '; collect more shadow traffic, or override with --force --reason "..."',
            gates,
        )
    event = _move(
        cfg,
        "promote",
        name,
        champion,
        current,
        target,
        gates,
        bool(failed and force),
        reason,
        actor,
        tu,
    )
    if publish:
        publish_audit(cfg, event, settings.kafka_bootstrap)
    if shadow is not None:
        store.reset(cfg.name, [s.name for s in cfg.models.shadows])
    return PromotionOutcome(event, gates, agg)


def rollback(
    cfg: PipelineConfig,
    *,
    reason: str = "",
    actor: str | None = None,
    store: ShadowStore | None = None,
    tracking_uri: str | None = None,
    publish: bool = True,
) -> PromotionOutcome:
    """Move the champion alias back to ``previous`` (and previous to the replaced champion)."""
    from raylane.settings import Settings

    settings = Settings.load()
    name, champion = _champion(cfg)
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"rolling back {name}", tu, name=name):
        current = _alias_version(c, name, champion)
        target = _alias_version(c, name, cfg.promotion.previous_alias)
    if target is None:
        raise ModelError(
            f"registered model {name} has no alias {cfg.promotion.previous_alias}; "
            "nothing to roll back to (promote first)",
            stage="promotion",
        )
    event = _move(cfg, "rollback", name, champion, current, target, [], False, reason, actor, tu)
    if publish:
        publish_audit(cfg, event, settings.kafka_bootstrap)
    (store or ShadowStore(settings.redis_url)).reset(cfg.name, [s.name for s in cfg.models.shadows])
    return PromotionOutcome(event)


def _move(
    cfg: PipelineConfig,
    action: Literal["promote", "rollback"],
    name: str,
    champion: str,
    current: str | None,
    target: str,
    gates: list[GateResult],
    forced: bool,
    reason: str,
    actor: str | None,
    tu: str,
) -> dict[str, Any]:
    event = _event(
        cfg,
        action,
        name,
        champion,
        current,
        target,
        cfg.promotion.previous_alias,
        gates,
        forced,
        reason,
        actor,
    )
    now_ms = event["at"]
    c = client(tu)
    key = promotion_key()
    with boundary(f"moving {name}@{champion} to v{target}", tu, name=name):
        if key is not None:
            # approvals first: a replica that sees an alias move finds its approval there
            _approve(c, key, name, champion, target)
            if current is not None:
                _approve(c, key, name, cfg.promotion.previous_alias, current)
        if current is not None:
            c.set_registered_model_alias(name, cfg.promotion.previous_alias, current)
        c.set_registered_model_alias(name, champion, target)
        c.set_model_version_tag(name, target, f"raylane.{action}d_at", str(now_ms))
        c.set_model_version_tag(name, target, f"raylane.{action}d_by", event["actor"])
        if reason:
            c.set_model_version_tag(name, target, f"raylane.{action}_reason", reason)
        if current is not None:
            c.set_model_version_tag(name, current, "raylane.replaced_at", str(now_ms))
        _record(c, name, event)
    return event


def _event(
    cfg: PipelineConfig,
    action: str,
    name: str,
    alias: str,
    current: str | None,
    target: str,
    previous_alias: str,
    gates: list[GateResult],
    forced: bool,
    reason: str,
    actor: str | None,
) -> dict[str, Any]:
    """The audit event of one alias move (the models.promoted contract)."""
    return {
        "event_id": str(uuid.uuid4()),
        "pipeline": cfg.name,
        "action": action,
        "model_name": name,
        "alias": alias,
        "from_version": current,
        "to_version": target,
        "previous_alias": previous_alias,
        "actor": actor or default_actor(),
        "at": int(time.time() * 1000),
        "forced": forced,
        "reason": reason,
        "gates": [
            {
                "name": g.name,
                "threshold": _text(g.threshold),
                "measured": _text(g.measured),
                "passed": g.passed,
                "detail": g.detail,
            }
            for g in gates
        ],
    }


def _record(c: Any, name: str, event: dict[str, Any]) -> None:
    """Keep the audit event on the registered model (``raylane.history.<ms>``)."""
    c.set_registered_model_tag(
        name, f"{HISTORY_TAG}{event['at']}", json.dumps(event, separators=(",", ":"))
    )


def _approve(c: Any, key: bytes, name: str, alias: str, version: str) -> None:
    """Sign `version` for `alias`: the version's tag, then the model's record of it."""
    c.set_model_version_tag(name, version, approval_tag(alias), sign(key, name, alias, version))
    c.set_registered_model_tag(name, record_tag(alias), approved_record(key, name, alias, version))


def sign_aliases(name: str, aliases: list[str], *, tracking_uri: str | None = None) -> list[str]:
    """Approve the versions `aliases` name now (bootstrap, after registering); needs the key.

    Returns the aliases signed; nothing without a promotion key.
    """
    key = promotion_key()
    if key is None:
        return []
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    signed = []
    with boundary(f"approving the aliases of {name}", tu, name=name):
        for alias in aliases:
            version = _alias_version(c, name, alias)
            if version is not None:
                _approve(c, key, name, alias, version)
                signed.append(alias)
    return signed


def set_shadow(
    cfg: PipelineConfig,
    version: int,
    *,
    reason: str = "",
    actor: str | None = None,
    tracking_uri: str | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """Move the challenger alias (what the shadows serve) to `version`, approved and audited.

    Not gated: a shadow never decides. With a promotion key, shadow replicas serve only
    versions moved here (or by bootstrap); an alias moved in the MLflow UI is refused.
    """
    from raylane.settings import Settings

    name, _ = _champion(cfg)
    alias = cfg.promotion.challenger_alias
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    key = promotion_key()
    with boundary(f"moving {name}@{alias} to v{version}", tu, name=name):
        target = str(c.get_model_version(name, str(version)).version)
        current = _alias_version(c, name, alias)
        event = _event(cfg, "shadow", name, alias, current, target, "", [], False, reason, actor)
        if key is not None:
            _approve(c, key, name, alias, target)
        c.set_registered_model_alias(name, alias, target)
        _record(c, name, event)
    if publish:
        publish_audit(cfg, event, Settings.load().kafka_bootstrap)
    return event


def _text(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def history(
    cfg: PipelineConfig, *, tracking_uri: str | None = None, bootstrap: str | None = None
) -> list[dict[str, Any]]:
    """Promotions and rollbacks of the pipeline's model, oldest first.

    Read from the registered model's MLflow tags (durable) and, when `bootstrap` is
    given, from the audit topic too; merged by event_id.
    """
    name, _ = _champion(cfg)
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"reading the promotion history of {name}", tu, name=name):
        tags = dict(c.get_registered_model(name).tags or {})
    events: dict[str, dict[str, Any]] = {}
    for k, v in tags.items():
        if k.startswith(HISTORY_TAG):
            try:
                e = json.loads(v)
            except json.JSONDecodeError:
                continue
            if e.get("pipeline") == cfg.name:
                e["source"] = "mlflow"
                events[e["event_id"]] = e
    if bootstrap:
        for e in read_audit_topic(cfg, bootstrap):
            e = {**e, "at": at_ms(e)}
            prior = events.get(e["event_id"])
            e["source"] = "mlflow+kafka" if prior else "kafka"
            events[e["event_id"]] = e
    return sorted(events.values(), key=at_ms)
