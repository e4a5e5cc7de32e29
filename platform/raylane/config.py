"""Pydantic models of a pipeline config, one frozen model per section.

A pipeline lives in the ``args`` of a standard Ray Serve config
(``serve_configs/<name>.yaml``). :func:`PipelineConfig.from_args` validates it;
any error is a :class:`~raylane.errors.ConfigError` naming the YAML path, the
bad value and the fix. Connection settings (broker, Redis, MLflow) are *not*
here: they come from the environment (:mod:`raylane.settings`) so the same file
runs locally and on a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from raylane.errors import ConfigError

__all__ = [
    "FIELD_SOURCES",
    "ActionTopic",
    "ActionsConfig",
    "ActorOptions",
    "ArchiveConfig",
    "ArchiveTopic",
    "AutoscalingConfig",
    "BatchingConfig",
    "BreakerConfig",
    "CacheConfig",
    "CategoricalFeature",
    "Condition",
    "ConfluentRegistryConfig",
    "DecisionConfig",
    "DecisionRule",
    "DerivedFeature",
    "DriftConfig",
    "EventTimeConfig",
    "FeaturesConfig",
    "FileRegistryConfig",
    "Frozen",
    "IngressConfig",
    "InputConfig",
    "LabelsConfig",
    "ModelConfig",
    "ModelsConfig",
    "OnlineFeatureView",
    "OutputConfig",
    "OutputsConfig",
    "PipelineConfig",
    "PromotionConfig",
    "PublishAction",
    "SchemaRegistryConfig",
    "UpdateProfileAction",
    "WebhookAction",
    "WindowFeature",
    "load_serve_config",
]

_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_MODEL_URI = r"^models:/[A-Za-z0-9_.-]+(@[A-Za-z0-9_-]+|/[0-9]+)$"
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$"
)

Topic = Annotated[str, Field(pattern=_TOPIC)]
Ident = Annotated[str, Field(pattern=_IDENT)]


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_TIME_SCALE_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001}


class EventTimeConfig(Frozen):
    """Where an event's own time is: window features, event-time checks, shadow and drift
    windows read it. Inside the platform it is epoch milliseconds (:meth:`ms`)."""

    field: Ident = Field(
        default="event_time",
        description="Event field holding the event's time as an epoch number (an Avro "
        "timestamp-millis/micros logical type is read as its epoch integer).",
    )
    unit: Literal["ms", "s", "us"] = Field(
        default="ms",
        description="Unit of that epoch number: milliseconds, seconds or microseconds.",
    )

    def ms(self, event: Mapping[str, Any]) -> int:
        """The event's time in epoch milliseconds; KeyError / TypeError / ValueError when the
        field is missing or not a number."""
        v = event[self.field]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"{self.field} is {v!r}, not an epoch number ({self.unit})")
        return int(v) if self.unit == "ms" else int(v * _TIME_SCALE_TO_MS[self.unit])

    def ms_or_none(self, event: Mapping[str, Any]) -> int | None:
        """:meth:`ms`, or None when the event has no usable time."""
        try:
            return self.ms(event)
        except (KeyError, TypeError, ValueError):
            return None

    def ms_or(self, event: Mapping[str, Any], default: int = 0) -> int:
        """:meth:`ms`, or `default` when the event has no usable time."""
        t = self.ms_or_none(event)
        return default if t is None else t


class InputConfig(Frozen):
    topic: Topic = Field(description="Kafka topic the ingress consumes.")
    contract: str = Field(
        description="Schema name of the input contract; its subject is `<contract>-value`."
    )
    key_field: Ident = Field(
        description="Event field holding the entity key: the Kafka key of every output, and of "
        "every event the platform's producer sends for this pipeline (ordering per entity)."
    )
    event_time: EventTimeConfig = Field(
        default_factory=EventTimeConfig,
        description="The event-time field and its unit (default: `event_time`, epoch ms).",
    )
    formats: tuple[Literal["avro", "json"], ...] = Field(
        default=("avro", "json"),
        description="Accepted wire formats: Confluent Avro (magic byte 0 + schema id) and/or "
        "JSON objects validated against the same contract.",
    )
    dlq_topic: Topic | None = Field(
        default=None, description="Dead-letter topic; defaults to `<topic>.dlq`."
    )
    max_event_bytes: PositiveInt = Field(
        default=1 << 20, description="Events larger than this go to the DLQ (default 1 MiB)."
    )
    max_key_bytes: PositiveInt = Field(
        default=1024, description="Records with a longer Kafka key go to the DLQ (LimitExceeded)."
    )
    max_header_bytes: PositiveInt = Field(
        default=16 << 10,
        description="Records whose headers (names + values) exceed this go to the DLQ "
        "(LimitExceeded); their dead letter keeps none of those headers.",
    )
    max_string_chars: PositiveInt = Field(
        default=4096,
        description="Events with a longer string field (at any depth) go to the DLQ "
        "(LimitExceeded): ids are copied into every output's body and headers.",
    )
    max_future_skew_s: PositiveFloat | None = Field(
        default=300.0,
        description="An event whose event time is more than this ahead of its record's broker "
        "timestamp goes to the DLQ (EventTimeOutOfRange): one far-future event would otherwise "
        "move its key's window forward and drop the real events from it. null turns it off.",
    )
    max_event_age_s: PositiveFloat | None = Field(
        default=None,
        description="An event whose event time is more than this behind its broker timestamp "
        "goes to the DLQ (EventTimeOutOfRange). Off by default: replays and backfills carry old "
        "event times.",
    )
    max_decompressed_batch_bytes: PositiveInt = Field(
        default=64 << 20,
        description="Most bytes one compressed Kafka record batch may inflate to (default "
        "64 MiB). Decompression stops there: the batch goes to the DLQ whole "
        "(DecompressedTooLarge) and the ingress goes on after it, so a compression bomb "
        "cannot exhaust a replica's memory.",
    )

    @model_validator(mode="after")
    def _batch_fits_an_event(self) -> InputConfig:
        if self.max_decompressed_batch_bytes < self.max_event_bytes:
            raise ValueError(
                f"max_decompressed_batch_bytes ({self.max_decompressed_batch_bytes}) is smaller "
                f"than max_event_bytes ({self.max_event_bytes}): a batch holding one event of "
                "the largest allowed size would be rejected; raise max_decompressed_batch_bytes"
            )
        return self

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


class ActorOptions(Frozen):
    num_cpus: NonNegativeFloat = Field(default=0.5, description="CPUs reserved per replica.")
    num_gpus: NonNegativeFloat = Field(default=0.0, description="GPUs reserved per replica.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources required per replica."
    )


class IngressConfig(Frozen):
    group_id: str = Field(description="Kafka consumer group shared by all ingress replicas.")
    num_replicas: PositiveInt = Field(
        default=1, description="Ingress replicas; each is one consumer-group member."
    )
    max_batch_size: PositiveInt = Field(
        default=500, le=100_000, description="Most events in one micro-batch."
    )
    max_wait_ms: NonNegativeInt = Field(
        default=0,
        le=60_000,
        description="Longest a micro-batch waits to fill after its first event; 0 takes what has "
        "arrived (under load batches still grow: records pile up while the previous batch runs).",
    )
    fetch_max_wait_ms: PositiveInt = Field(
        default=5,
        le=1000,
        description="Broker-side fetch wait; keep small (5-10 ms) for low latency.",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts."
    )
    session_timeout_ms: PositiveInt = Field(
        default=10_000,
        description="Consumer-group session timeout; a dead replica is evicted after it.",
    )
    stall_timeout_s: PositiveFloat = Field(
        default=120.0,
        description="Liveness: a replica that owns partitions with pending input and has "
        "committed nothing for this long (while not waiting out a dependency outage) fails "
        "its health check, and Serve restarts it.",
    )
    poison_retries: NonNegativeInt = Field(
        default=2,
        description="Retries of a batch that failed for a reason other than a dependency "
        "outage, before it is split to find and dead-letter the failing record(s).",
    )
    max_shadow_inflight: PositiveInt = Field(
        default=8, description="Shadow batches in flight per replica before new ones are skipped."
    )
    ray_actor_options: ActorOptions = Field(
        default_factory=ActorOptions, description="Ray resources of one ingress replica."
    )


class OnlineFeatureView(Frozen):
    view: Ident = Field(description="Feast feature view name.")
    entity_field: Ident = Field(description="Event field holding the view's join key.")
    join_key: Ident | None = Field(
        default=None, description="Feast join key name; defaults to `entity_field`."
    )
    features: tuple[Ident, ...] = Field(min_length=1, description="Features to read from the view.")

    @property
    def key(self) -> str:
        return self.join_key or self.entity_field

    def columns(self) -> list[str]:
        """Column names as Feast's `full_feature_names=True` spells them."""
        return [f"{self.view}__{f}" for f in self.features]


class WindowFeature(Frozen):
    name: Ident = Field(description="Column name of the feature.")
    kind: Literal["count", "sum", "first_seen"] = Field(
        description="count / sum over a sliding event-time window, or first_seen "
        "(1.0 when this event is the first for its key)."
    )
    key_fields: tuple[Ident, ...] = Field(
        min_length=1, description="Event fields that form the aggregation key (e.g. [account_id])."
    )
    value_field: Ident | None = Field(default=None, description="Event field summed by `sum`.")
    window_s: PositiveFloat = Field(
        default=60.0, description="Window length: the window of an event at t is (t - window_s, t]."
    )
    retention_s: PositiveFloat = Field(
        default=90 * 86400.0, description="How long first_seen keys are kept."
    )

    @model_validator(mode="after")
    def _value_field_for_sum(self) -> WindowFeature:
        if self.kind == "sum" and not self.value_field:
            raise ValueError(
                f"window {self.name!r} has kind 'sum' but no value_field; name the "
                "event field to sum, e.g. value_field: amount"
            )
        return self


class DerivedFeature(Frozen):
    name: Ident = Field(description="Column name of the feature.")
    op: Literal["ratio", "difference", "product", "sum"] = Field(
        description="left / right, left - right, left * right or left + right, per event."
    )
    left: Ident = Field(description="A column defined above it (event, online, window or derived).")
    right: Ident = Field(
        description="A column defined above it (event, online, window or derived)."
    )


_SLUG = re.compile(r"[^A-Za-z0-9_]+")


class CategoricalFeature(Frozen):
    """A categorical event field turned into numeric columns, the same way in training
    (:func:`raylane.features.encode_categorical`) and in serving."""

    field: Ident = Field(description="Event field holding the category (string, int or bool).")
    encoding: Literal["one_hot", "ordinal"] = Field(
        description="one_hot: one 0/1 column per category plus `<name>__unknown` for any other "
        "value; ordinal: one column, category i of `categories` -> i + 1, any other value "
        "(unknown or missing) -> 0."
    )
    categories: tuple[str, ...] = Field(
        min_length=1,
        description="The known categories, in order (values are compared as strings).",
    )
    name: Ident | None = Field(
        default=None, description="Column name (ordinal) or prefix (one_hot); defaults to `field`."
    )

    @property
    def column(self) -> str:
        return self.name or self.field

    def columns(self) -> list[str]:
        """The columns it produces, in order."""
        if self.encoding == "ordinal":
            return [self.column]
        return [f"{self.column}__{_SLUG.sub('_', c)}" for c in self.categories] + [
            f"{self.column}__unknown"
        ]

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categorical {self.field!r} lists a category twice")
        cols = self.columns()
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(
                f"categorical {self.field!r}: categories map to the same column(s) {dup} "
                "(characters other than letters, digits and _ become _); rename one"
            )
        return self


class FeaturesConfig(Frozen):
    feast_repo: str = Field(default="features", description="Path of the Feast feature repo.")
    event: tuple[Ident, ...] = Field(
        default=(), description="Numeric event fields passed to the models as features."
    )
    categorical: tuple[CategoricalFeature, ...] = Field(
        default=(),
        description="Categorical event fields encoded into numeric columns (one-hot or "
        "ordinal with an unknown bucket), identically in training and serving.",
    )
    online: tuple[OnlineFeatureView, ...] = Field(default=(), description="Feast online reads.")
    windows: tuple[WindowFeature, ...] = Field(default=(), description="Streaming window features.")
    derived: tuple[DerivedFeature, ...] = Field(
        default=(),
        description="Columns computed from other columns per batch (e.g. amount relative to the "
        "user's average); a missing input or a zero divisor gives a missing value.",
    )

    def base_columns(self) -> list[str]:
        cols = list(self.event)
        for c in self.categorical:
            cols += c.columns()
        for v in self.online:
            cols += v.columns()
        cols += [w.name for w in self.windows]
        return cols

    def columns(self) -> list[str]:
        return self.base_columns() + [d.name for d in self.derived]

    @model_validator(mode="after")
    def _unique_columns(self) -> FeaturesConfig:
        cols = self.columns()
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"feature columns {dup} are defined more than once; rename one")
        known = self.base_columns()
        for i, d in enumerate(self.derived):
            for side in ("left", "right"):
                col = getattr(d, side)
                if col not in known:
                    raise ValueError(
                        f"derived[{i}] ({d.name}).{side} is {col!r}, which is not a column "
                        f"defined before it; known: {known}"
                    )
            known.append(d.name)
        return self


class AutoscalingConfig(Frozen):
    """Ray Serve autoscaling of one model deployment (maps to Serve's ``autoscaling_config``)."""

    min_replicas: NonNegativeInt = Field(default=1, description="Fewest replicas kept running.")
    max_replicas: PositiveInt = Field(default=1, description="Most replicas Serve may start.")
    initial_replicas: NonNegativeInt | None = Field(
        default=None, description="Replicas at deploy time; defaults to min_replicas."
    )
    target_ongoing_requests: PositiveFloat = Field(
        default=2.0, description="Ongoing batch calls per replica that Serve aims for."
    )
    upscale_delay_s: NonNegativeFloat = Field(
        default=30.0, description="How long load must stay high before replicas are added."
    )
    downscale_delay_s: NonNegativeFloat = Field(
        default=600.0, description="How long load must stay low before replicas are removed."
    )
    metrics_interval_s: PositiveFloat = Field(
        default=10.0, description="How often replicas report their load to the autoscaler."
    )
    look_back_period_s: PositiveFloat = Field(
        default=30.0, description="Window over which the load is averaged."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        init = self.initial_replicas
        if init is not None and not self.min_replicas <= init <= self.max_replicas:
            raise ValueError(
                f"initial_replicas ({init}) must lie between min_replicas "
                f"({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """The dict Ray Serve's ``autoscaling_config`` option takes."""
        return self.model_dump(exclude_none=True)


class BatchingConfig(Frozen):
    """Serve-side batching: concurrent batch calls (e.g. from several ingress replicas) are
    merged into one model call (Ray Serve's ``@serve.batch``)."""

    max_batch_size: PositiveInt = Field(
        default=4, le=1024, description="Most batch calls merged into one model call."
    )
    batch_wait_timeout_s: NonNegativeFloat = Field(
        default=0.0,
        le=10.0,
        description="Longest a call waits for others to merge with; 0 "
        "merges only calls that are already queued.",
    )


class CacheConfig(Frozen):
    """Prediction cache of one model: key = (model version, feature vector)."""

    ttl_s: PositiveFloat = Field(description="Hard time to live of a cached score, in seconds.")
    max_entries: PositiveInt = Field(
        default=100_000,
        le=10_000_000,
        description="Most cached scores; the least recently used go first.",
    )


class ModelConfig(Frozen):
    name: Ident = Field(description="Label of this model in outputs and metrics, e.g. champion.")
    uri: str = Field(
        pattern=_MODEL_URI,
        description="MLflow registry URI: models:/<name>@<alias> or models:/<name>/<version>.",
    )
    flavor: Literal["xgboost", "sklearn", "lightgbm", "python_function"] | None = Field(
        default=None,
        description="MLflow flavor to load the model with (raylane.flavors); unset: the first "
        "of xgboost, lightgbm, sklearn, python_function that the model was logged with. A "
        "version without this flavor is refused.",
    )
    num_replicas: PositiveInt = Field(
        default=1, description="Replicas of the model deployment (ignored with autoscaling_config)."
    )
    ray_actor_options: ActorOptions = Field(
        default_factory=ActorOptions, description="Ray resources of one model replica."
    )
    autoscaling_config: AutoscalingConfig | None = Field(
        default=None, description="Scale replicas with load instead of a fixed num_replicas."
    )
    max_ongoing_requests: PositiveInt = Field(
        default=16,
        description="Batch calls one replica accepts at once (Serve's max_ongoing_requests).",
    )
    batching: BatchingConfig | None = Field(
        default=None,
        description="Merge concurrent batch calls into one model call; off when unset.",
    )
    cache: CacheConfig | None = Field(
        default=None, description="Prediction cache (per replica); off when unset."
    )
    timeout_s: PositiveFloat = Field(
        default=5.0, description="Longest one batch call may take before it counts as failed."
    )
    sample_fraction: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Shadows only: fraction of events the shadow scores, chosen deterministically "
        "by a hash of event_id (the same events for every shadow and every replica).",
    )
    reload_poll_s: PositiveFloat = Field(
        default=2.0,
        le=60.0,
        description="For alias URIs: how often replicas check the registry for an alias move "
        "(hot swap without a restart).",
    )
    placement: Literal["deployment", "ingress"] = Field(
        default="deployment",
        description="Where the model runs: its own Ray Serve deployment (replicas, "
        "autoscaling, GPUs), or inside each ingress replica, scored in process with no Serve "
        "call on the critical path (hot swap, cache, approval and metrics unchanged; for a "
        "small CPU model such as XGBoost).",
    )

    @model_validator(mode="after")
    def _placement_fits(self) -> ModelConfig:
        if self.placement != "ingress":
            return self
        wrong = []
        if self.ray_actor_options.num_gpus > 0:
            wrong.append("ray_actor_options.num_gpus (a GPU model needs its own replicas)")
        if self.autoscaling_config is not None:
            wrong.append("autoscaling_config (the ingress's replicas are the model's)")
        if "num_replicas" in self.model_fields_set and self.num_replicas != 1:
            wrong.append("num_replicas (the ingress's replicas are the model's)")
        if self.batching is not None:
            wrong.append("batching (merges calls to a deployment; in process there are none)")
        if wrong:
            raise ValueError(
                f"placement: ingress does not go with {'; '.join(wrong)}; remove them, or set "
                "placement: deployment"
            )
        return self

    @property
    def registered_name(self) -> str:
        return re.split(r"[@/]", self.uri[len("models:/") :])[0]

    @property
    def alias(self) -> str | None:
        return self.uri.split("@", 1)[1] if "@" in self.uri else None


class ModelsConfig(Frozen):
    primary: ModelConfig = Field(description="The model whose score decides.")
    shadows: tuple[ModelConfig, ...] = Field(
        default=(), description="Models scored off the critical path and compared to the primary."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ModelsConfig:
        names = [self.primary.name] + [s.name for s in self.shadows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names {dup} are used more than once; each needs its own name")
        if self.primary.sample_fraction != 1.0:
            raise ValueError(
                f"models.primary.sample_fraction is {self.primary.sample_fraction}; "
                "the primary scores every event, only shadows may sample"
            )
        return self


class PromotionConfig(Frozen):
    """Gates a challenger must pass on live shadow aggregates before `raylane promote`."""

    shadow: Ident | None = Field(
        default=None,
        description="Label of the shadow whose aggregates gate the promotion; "
        "defaults to the first shadow.",
    )
    challenger_alias: Ident = Field(default="challenger", description="Alias promoted from.")
    previous_alias: Ident = Field(
        default="previous",
        description="Alias the replaced champion keeps (what rollback restores).",
    )
    min_samples: NonNegativeInt = Field(
        default=1000, description="Fewest compared events in the aggregates."
    )
    min_agreement: float = Field(
        default=0.98, ge=0.0, le=1.0, description="Lowest decision agreement rate (0-1)."
    )
    max_p95_abs_delta: NonNegativeFloat = Field(
        default=0.1, description="Highest 95th percentile of |primary - shadow score|."
    )
    max_latency_p99_ratio: PositiveFloat = Field(
        default=1.5, description="Highest shadow p99 latency divided by the primary's."
    )
    require_no_drift_alert: bool = Field(
        default=True, description="Refuse while the drift monitor has an open alert."
    )
    window: PositiveInt = Field(
        default=20_000, description="Most recent compared events the aggregates cover."
    )
    audit_topic: Topic = Field(
        default="models.promoted", description="Topic of the models.promoted audit events."
    )


class Condition(Frozen):
    column: str
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = _COND.match(text)
        if not m:
            raise ValueError(
                f"{text!r} is not a condition; write `<column> <op> <number>` with op one of "
                "> >= < <= == !=, e.g. `score > 0.85`"
            )
        return cls(column=m.group(1), op=m.group(2), value=float(m.group(3)))  # type: ignore[arg-type]


#: What an output field can be filled from (`OutputConfig.fields`).
FIELD_SOURCES = ("now", "event_time", "score", "decision", "rule", "model_name", "model_version")
_FIELD_SOURCE = re.compile(
    r"^(?:(?:" + "|".join(FIELD_SOURCES) + r")|(?:input|feature)\.[A-Za-z_][A-Za-z0-9_]*)$"
)


class OutputConfig(Frozen):
    topic: Topic = Field(description="Kafka topic.")
    contract: str = Field(description="Schema name of the records written there.")
    fields: dict[Ident, str] = Field(
        default_factory=dict,
        description="Output fields filled from a source: `now` (epoch ms when the batch was "
        "scored), `event_time` (the input's event time, epoch ms), `score`, `decision`, "
        "`rule`, `model_name`, `model_version`, `input.<event field>` or "
        "`feature.<feature column>`. Every field of the contract that the input event has is "
        "copied as is; `scored_at` and `flagged_at` are `now` unless set here.",
    )

    @field_validator("fields")
    @classmethod
    def _sources(cls, v: dict[str, str]) -> dict[str, str]:
        for name, src in v.items():
            if not _FIELD_SOURCE.match(src):
                raise ValueError(
                    f"fields.{name} is {src!r}, not a source; use one of "
                    f"{', '.join(FIELD_SOURCES)}, input.<event field> or feature.<column>"
                )
        return v


class DecisionRule(Frozen):
    name: Ident = Field(description="Rule name, recorded in outputs.")
    when: str = Field(
        description="Conditions joined by `and`, each `<column> <op> <number>`; columns are "
        "`score` or any feature column."
    )
    decision: Ident = Field(description="Decision written on the scored event when the rule fires.")
    publish: OutputConfig | None = Field(
        default=None, description="Extra topic the event is published to when the rule fires."
    )

    @field_validator("when")
    @classmethod
    def _parse_when(cls, v: str) -> str:
        for part in re.split(r"\s+and\s+", v.strip()):
            Condition.parse(part)
        return v

    def conditions(self) -> list[Condition]:
        return [Condition.parse(p) for p in re.split(r"\s+and\s+", self.when.strip())]


class DecisionConfig(Frozen):
    rules: tuple[DecisionRule, ...] = Field(
        default=(), description="Evaluated in order; the first that fires decides."
    )
    default: Ident = Field(default="approved", description="Decision when no rule fires.")


class OutputsConfig(Frozen):
    scored: OutputConfig = Field(description="Every scored event goes here.")
    shadow: OutputConfig | None = Field(
        default=None, description="Per-event shadow comparisons go here (needs shadows)."
    )


class BreakerConfig(Frozen):
    fail_max: PositiveInt = Field(
        default=3, description="Consecutive failures of a dependency that open its breaker."
    )
    reset_timeout_s: PositiveFloat = Field(
        default=5.0, description="Seconds an open breaker waits before one trial call."
    )


class FileRegistryConfig(Frozen):
    type: Literal["file"] = Field(default="file", description="The committed file registry.")
    path: str = Field(
        default="",
        description="Directory of the file registry; empty means the one shipped in the package. "
        "A relative path is resolved against the current directory when the config is loaded.",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # pinned at load time: Serve replicas run with another working directory
        return str(Path(v).resolve()) if v else v


class ConfluentRegistryConfig(Frozen):
    type: Literal["confluent"] = Field(
        description="A Confluent Schema Registry REST API (Confluent, Karapace, Redpanda, "
        "Apicurio)."
    )
    url: str = Field(
        pattern=r"^https?://",
        description="Base URL of the registry, e.g. http://schema-registry:8081.",
    )
    basic_auth_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding `user:password` for basic auth "
        "(the secret itself never goes into the config).",
    )
    timeout_s: PositiveFloat = Field(default=10.0, description="Timeout of one REST call.")


SchemaRegistryConfig = Annotated[
    FileRegistryConfig | ConfluentRegistryConfig, Field(discriminator="type")
]


# -- drift monitor and actions (monitoring/drift*, actions/) ------------------------------


class DriftConfig(Frozen):
    enabled: bool = Field(default=True, description="Start the drift monitor with the app.")
    group_id: str | None = Field(
        default=None, description="Consumer group of the monitor; defaults to `<pipeline>-drift`."
    )
    output: OutputConfig = Field(
        default_factory=lambda: OutputConfig(topic="model.drift", contract="model.drift"),
        description="Where model.drift events go.",
    )
    window_size: PositiveInt = Field(
        default=500, le=1_000_000, description="Events per evaluated window (count trigger)."
    )
    window_s: PositiveFloat | None = Field(
        default=None,
        description="Event-time span that also closes a window (time trigger); none: count only.",
    )
    min_window_size: PositiveInt = Field(
        default=100,
        description="A window closed by time with fewer events is not evaluated; its events "
        "carry over into the next window.",
    )
    columns: tuple[Ident, ...] = Field(
        default=(),
        description="Feature columns compared with the reference; empty: every feature column "
        "of the pipeline that the reference sample has.",
    )
    prediction_column: Ident = Field(
        default="score", description="Prediction column compared too (prediction drift)."
    )
    drift_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A window drifts when at least this share of the compared columns "
        "(features + prediction) drift (Evidently's dataset-drift rule, default 0.5).",
    )
    method: str | None = Field(
        default=None,
        description="Evidently stattest for every compared column (e.g. psi, ks, wasserstein); "
        "none: Evidently's default for the column type and the reference size.",
    )
    per_column_method: dict[str, str] = Field(
        default_factory=dict,
        description="Evidently stattest per column, over `method` (e.g. {amount: ks}).",
    )
    per_column_threshold: dict[str, float] = Field(
        default_factory=dict,
        description="Stattest threshold per column; unset: the test's default.",
    )
    clear_after: PositiveInt = Field(
        default=1,
        description="Consecutive clean windows that close an open drift alert.",
    )
    report_dir: str = Field(
        default="",
        description="Where window reports (Evidently HTML) are saved; empty: "
        "$RAYLANE_HOME/drift/<pipeline>.",
    )
    report_keep: PositiveInt = Field(
        default=50,
        description="Window reports kept (the newest; each is ~3.5 MB): after writing a report "
        "the monitor deletes its older ones beyond this count. The report_uri of a deleted "
        "report's model.drift event no longer resolves.",
    )
    report_max_age_s: PositiveFloat | None = Field(
        default=7 * 24 * 3600.0,
        description="Window reports older than this (by file time) are deleted after each new "
        "report, whatever report_keep allows; none: no age limit (default 7 days).",
    )
    niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="OS niceness of the threads that evaluate windows; above 0 the scoring "
        "path wins CPU contention with the monitor.",
    )
    ray_actor_options: ActorOptions = Field(
        default_factory=lambda: ActorOptions(num_cpus=0.25),
        description="Ray resources of the monitor replica.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> DriftConfig:
        if self.min_window_size > self.window_size:
            raise ValueError(
                f"min_window_size ({self.min_window_size}) must be <= window_size "
                f"({self.window_size})"
            )
        return self


class UpdateProfileAction(Frozen):
    type: Literal["update_profile"] = Field(
        description="Raise a feature of the entity's online row."
    )
    name: Ident = Field(default="update_profile", description="Handler name (dedupe key, metrics).")
    view: Ident = Field(description="Feast feature view to update.")
    entity_field: Ident = Field(description="Event field holding the join key.")
    feature: Ident = Field(description="Feature raised by the action.")
    increase: PositiveFloat = Field(default=0.25, description="Added to the feature's value.")
    maximum: float = Field(default=1.0, description="The value never goes above this.")


class WebhookAction(Frozen):
    type: Literal["webhook"] = Field(description="POST the event as JSON to a URL.")
    name: Ident = Field(default="webhook", description="Handler name (dedupe key, metrics).")
    url: str = Field(pattern=r"^https?://", description="Where to POST.")
    timeout_s: PositiveFloat = Field(default=5.0, description="Timeout of one attempt.")
    attempts: PositiveInt = Field(default=4, le=20, description="Attempts before the action DLQ.")
    backoff_s: PositiveFloat = Field(
        default=0.2, description="First retry delay; doubles each time."
    )
    backoff_max_s: PositiveFloat = Field(default=5.0, description="Longest delay between attempts.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig,
        description="Breaker around the URL (failed events, not attempts).",
    )


class PublishAction(Frozen):
    type: Literal["publish"] = Field(description="Emit a derived event under its own contract.")
    name: Ident = Field(default="publish", description="Handler name (dedupe key, metrics).")
    output: OutputConfig = Field(description="Topic and contract of the derived event.")
    set: dict[str, str | float | int | bool] = Field(
        default_factory=dict, description="Constant fields of the derived event (e.g. reason)."
    )
    time_field: Ident | None = Field(
        default=None, description="Field set to the action time (epoch ms), e.g. blocked_at."
    )


Action = Annotated[UpdateProfileAction | WebhookAction | PublishAction, Field(discriminator="type")]


class ActionTopic(Frozen):
    topic: Topic = Field(description="Topic whose events trigger the handlers.")
    contract: str = Field(description="Contract of the events on it.")
    handlers: tuple[Action, ...] = Field(min_length=1, description="Run in order for every event.")
    dlq_topic: Topic | None = Field(
        default=None, description="Action DLQ; defaults to `<topic>.actions.dlq`."
    )

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.topic}.actions.dlq"

    @model_validator(mode="after")
    def _unique_handlers(self) -> ActionTopic:
        names = [h.name for h in self.handlers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"handler names {dup} are used more than once on topic {self.topic}; "
                "give each a distinct name"
            )
        return self


class ActionsConfig(Frozen):
    enabled: bool = Field(default=True, description="Start the action runner with the app.")
    group_id: str | None = Field(
        default=None, description="Consumer group of the runner; defaults to `<pipeline>-actions`."
    )
    topics: tuple[ActionTopic, ...] = Field(
        default=(), description="Action topics and their handlers."
    )
    dedupe_ttl_s: PositiveInt = Field(
        default=7 * 86400, description="How long an event_id is remembered as handled, per handler."
    )
    claim_ttl_s: PositiveInt = Field(
        default=60,
        description="How long a handler's in-progress claim lives: a runner that dies mid-handler "
        "leaves it, and the event is run again once it expires (handlers are idempotent by "
        "event_id).",
    )
    max_batch_size: PositiveInt = Field(default=200, le=10_000, description="Events per poll.")
    ray_actor_options: ActorOptions = Field(
        default_factory=lambda: ActorOptions(num_cpus=0.25),
        description="Ray resources of the runner replica.",
    )


# -- event archive and labels (sinks/archive*) -------------------------------------------

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ArchiveTopic(Frozen):
    """One topic the archive writes to Parquet."""

    topic: Topic = Field(description="Kafka topic to archive.")
    contract: str | None = Field(
        default=None,
        description="Contract to decode values with (Avro wire format or JSON); none: a value "
        "that is a JSON object is decoded as JSON, anything else is only kept raw (`_value`).",
    )


class ArchiveConfig(Frozen):
    """The event archive: configured topics written to Parquet through fsspec, for replay,
    backtests and notebooks (layout and guarantees: docs/archive.md)."""

    enabled: bool = Field(default=True, description="Start the archiver with the app.")
    topics: tuple[ArchiveTopic, ...] = Field(
        min_length=1,
        description="Topics archived; each `{topic, contract}` (a plain string: a topic "
        "without a contract).",
    )
    path: str | None = Field(
        default=None,
        description="Root of the archive: an fsspec URL (s3://bucket/prefix, gs://..., "
        "memory://...) or a local path; none: $RAYLANE_HOME/archive.",
    )
    group_id: str | None = Field(
        default=None,
        description="Consumer group of the archiver; defaults to `<pipeline>-archive`.",
    )
    max_file_records: PositiveInt = Field(
        default=50_000, description="Most records in one Parquet file."
    )
    max_file_bytes: PositiveInt = Field(
        default=64 * 1024 * 1024,
        description="Most raw value bytes (before compression) in one Parquet file.",
    )
    flush_interval_s: PositiveFloat = Field(
        default=10.0,
        description="Pending records are written at least this often (seconds); their offsets "
        "are committed only after the files holding them are written.",
    )
    storage_options_env: str | None = Field(
        default=None,
        pattern=_ENV_NAME,
        description="Name of an environment variable holding a JSON object of fsspec storage "
        "options (e.g. S3 credentials); secrets never go in the config.",
    )
    ray_actor_options: ActorOptions = Field(
        default_factory=lambda: ActorOptions(num_cpus=0.25),
        description="Ray resources of the archiver replica.",
    )

    @field_validator("topics", mode="before")
    @classmethod
    def _topic_shorthand(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [{"topic": t} if isinstance(t, str) else t for t in v]
        return v

    @model_validator(mode="after")
    def _unique_topics(self) -> ArchiveConfig:
        names = [t.topic for t in self.topics]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"topics lists {twice} more than once; list each topic once")
        return self


class LabelsConfig(Frozen):
    """Where delayed ground truth arrives (one label per payment, minutes later); used by
    backtests to compute real quality metrics."""

    topic: Topic = Field(
        default="payments.labels", description="Kafka topic the labels are published to."
    )
    contract: str = Field(default="payments.labels", description="Contract of the labels.")


class PipelineConfig(Frozen):
    name: Ident = Field(description="Pipeline name; prefixes state keys, metrics and deployments.")
    input: InputConfig
    ingress: IngressConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    models: ModelsConfig
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    outputs: OutputsConfig
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig, description="Gates of `raylane promote` (model lifecycle)."
    )
    schema_registry: SchemaRegistryConfig = Field(
        default_factory=FileRegistryConfig,
        description="Where schemas are looked up: `{type: file, path: ...}` (default: the "
        "committed registry) or `{type: confluent, url: ...}`; a plain string is a file path.",
    )
    drift: DriftConfig | None = Field(default=None, description="Drift monitor; none: not started.")
    actions: ActionsConfig | None = Field(
        default=None, description="Action runner; none: not started."
    )
    archive: ArchiveConfig | None = Field(
        default=None, description="Event archive (Parquet via fsspec); none: not started."
    )
    labels: LabelsConfig | None = Field(
        default=None,
        description="Where delayed ground truth arrives; used by backtests. None: the pipeline "
        "has no labels.",
    )

    @field_validator("schema_registry", mode="before")
    @classmethod
    def _registry_shorthand(cls, v: Any) -> Any:
        return {"type": "file", "path": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        known = set(self.features.columns()) | {"score"}
        for i, rule in enumerate(self.decision.rules):
            for c in rule.conditions():
                if c.column not in known:
                    raise ValueError(
                        f"decision.rules[{i}].when uses column {c.column!r}, which is neither "
                        f"`score` nor a feature column; known columns: {sorted(known)}"
                    )
        outs = [("outputs.scored", self.outputs.scored)] + [
            (f"decision.rules[{i}].publish", r.publish)
            for i, r in enumerate(self.decision.rules)
            if r.publish is not None
        ]
        for where, out in outs:
            for name, src in out.fields.items():
                if src.startswith("feature.") and src[len("feature.") :] not in known:
                    raise ValueError(
                        f"{where}.fields.{name} is {src!r}, which is not a feature column; "
                        f"known columns: {sorted(known - {'score'})}"
                    )
        if self.models.shadows and self.outputs.shadow is None:
            raise ValueError(
                "models.shadows is set but outputs.shadow is not; add outputs.shadow "
                "{topic: ..., contract: ...} so comparisons have somewhere to go"
            )
        labels = [m.name for m in self.models.shadows]
        if self.promotion.shadow is not None and self.promotion.shadow not in labels:
            raise ValueError(
                f"promotion.shadow is {self.promotion.shadow!r}, which is not a shadow "
                f"label; shadows: {labels}"
            )
        return self

    def gating_shadow(self) -> ModelConfig | None:
        """The shadow whose aggregates gate promotion: promotion.shadow, else the first."""
        for m in self.models.shadows:
            if self.promotion.shadow in (None, m.name):
                return m
        return None

    @model_validator(mode="after")
    def _monitor_checks(self) -> PipelineConfig:
        if self.drift is not None:
            known = set(self.features.columns())
            bad = [c for c in self.drift.columns if c not in known]
            if bad:
                raise ValueError(
                    f"drift.columns {bad} are not feature columns; known: {sorted(known)}"
                )
        return self

    @classmethod
    def from_args(cls, args: dict[str, Any], *, where: str = "args") -> PipelineConfig:
        """Validate a Serve application's ``args``; errors name the YAML path under `where`."""
        try:
            return cls.model_validate(args)
        except ValidationError as e:
            raise ConfigError(_format_errors(e, where), stage="config") from e


def _format_errors(e: ValidationError, where: str) -> str:
    lines = []
    for err in e.errors():
        path = where
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required key is missing; add it"
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{path}: {msg}{shown}")
    return "invalid pipeline config:\n  " + "\n  ".join(lines)


def load_serve_config(
    path: str | Path, app_index: int = 0
) -> tuple[dict[str, Any], PipelineConfig]:
    """Read a Ray Serve config file and validate the pipeline in one application's args."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: no such file; pass a path like serve_configs/<name>.yaml") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    apps = (doc or {}).get("applications") if isinstance(doc, dict) else None
    if not isinstance(apps, list) or len(apps) <= app_index:
        raise ConfigError(
            f"{p}: applications[{app_index}] is missing; a Serve config lists "
            "applications, each with import_path and args"
        )
    args = apps[app_index].get("args")
    if not isinstance(args, dict):
        raise ConfigError(f"{p}: applications[{app_index}].args is missing; it holds the pipeline")
    try:
        return doc, PipelineConfig.from_args(args, where=f"applications[{app_index}].args")
    except ConfigError as e:
        raise ConfigError(f"{p}: {e.message}") from e
