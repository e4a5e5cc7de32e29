"""Promotion gates: live shadow aggregates and the drift monitor against the config's thresholds.

:func:`evaluate_gates` returns one :class:`GateResult` per gate (name, threshold,
measured value, passed) so the CLI can print exactly which gate failed and the audit
event can record every result. The drift gate is pluggable (:class:`DriftCheck`); the
default reads the drift monitor's state from Redis at ``raylane:drift:<pipeline>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from raylane.config import PromotionConfig
from raylane.errors import DependencyError
from raylane.lifecycle.shadow_stats import ShadowAggregate
from raylane.monitoring.drift_state import DriftState, drift_key
from raylane.redaction import mask_url
from raylane.redis_clients import connect_sync

__all__ = [
    "DriftCheck",
    "DriftStatus",
    "GateResult",
    "RedisDriftCheck",
    "drift_key",
    "evaluate_gates",
]


#: The drift monitor's state of one pipeline (the JSON the monitor keeps in Redis).
DriftStatus = DriftState


class DriftCheck(Protocol):
    """Returns the pipeline's drift state, or None when the monitor has recorded none."""

    def __call__(self, pipeline: str) -> DriftStatus | None: ...


class RedisDriftCheck:
    """The default drift check: reads ``raylane:drift:<pipeline>``; a missing key = no alert."""

    def __init__(self, redis_url: str, *, client: Any = None) -> None:
        if client is None:
            client = connect_sync(redis_url)
        self._r = client
        self.redis_url = redis_url

    def __call__(self, pipeline: str) -> DriftStatus | None:
        try:
            raw = self._r.get(drift_key(pipeline))
        except Exception as e:
            raise DependencyError(
                f"cannot read the drift state {drift_key(pipeline)} "
                f"from Redis at {mask_url(self.redis_url)}: "
                f"{e}; is Redis up (`raylane dev status`)? Or pass --force --reason to skip gates",
                stage="promotion",
            ) from e
        if raw is None:
            return None
        try:
            return DriftStatus.from_json(raw)
        except (ValueError, TypeError) as e:
            raise DependencyError(
                f"{drift_key(pipeline)} holds no valid drift state ({e}): {raw!r:.200}",
                stage="promotion",
            ) from e


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: Any
    measured: Any
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"gate {self.name} {verdict}: measured {_fmt(self.measured)}, "
            f"threshold {_fmt(self.threshold)}{extra}"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def evaluate_gates(
    pipeline: str,
    agg: ShadowAggregate,
    cfg: PromotionConfig,
    drift_check: DriftCheck | Callable[[str], DriftStatus | None] | None,
) -> list[GateResult]:
    """Every gate's result, in a fixed order. A missing figure fails its gate."""
    out = [
        GateResult(
            "min_samples",
            cfg.min_samples,
            agg.n,
            agg.n >= cfg.min_samples,
            f"compared events of shadow {agg.shadow}",
        ),
        _at_least("min_agreement", cfg.min_agreement, agg.agreement_rate),
        _at_most("max_p95_abs_delta", cfg.max_p95_abs_delta, agg.p95_abs_delta),
        _at_most("max_latency_p99_ratio", cfg.max_latency_p99_ratio, agg.latency_p99_ratio),
    ]
    if cfg.require_no_drift_alert:
        status = drift_check(pipeline) if drift_check is not None else None
        if status is None:
            out.append(
                GateResult("require_no_drift_alert", "no open alert", "no drift state", True)
            )
        else:
            detail = (
                f"drift_share {status.drift_share:.3g} vs {status.threshold:.3g} on "
                f"{status.model_name} v{status.model_version}, "
                f"columns {list(status.drifted_columns)}"
            )
            out.append(
                GateResult(
                    "require_no_drift_alert",
                    "no open alert",
                    "open alert" if status.open else "no open alert",
                    not status.open,
                    detail,
                )
            )
    return out


def _at_least(name: str, threshold: float, measured: float | None) -> GateResult:
    ok = measured is not None and measured >= threshold
    return GateResult(
        name, threshold, measured, ok, "" if measured is not None else "no comparisons yet"
    )


def _at_most(name: str, threshold: float, measured: float | None) -> GateResult:
    ok = measured is not None and measured <= threshold
    return GateResult(
        name, threshold, measured, ok, "" if measured is not None else "no comparisons yet"
    )
