"""Action handlers: what the runner does with one decided event, built from the config.

* :class:`UpdateProfileHandler` raises a feature of the entity's Feast online row (read
  with raylane's Feast-layout reader, written with Feast's own ``write_to_online_store``),
  so the entity's next event is scored with it.
* :class:`WebhookHandler` POSTs the event as JSON (httpx) with retries and exponential
  backoff (tenacity) behind a circuit breaker (pybreaker); what still fails is returned
  as :class:`ActionFailed` for the runner's action DLQ.
* :class:`PublishHandler` emits a derived event under its own contract.

A handler raises :class:`~raylane.errors.DependencyError` when its own dependency (Redis,
Kafka) fails: the runner then retries the batch instead of dead-lettering good events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import pybreaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from raylane.actions.metrics import ACTION_METRICS
from raylane.config import PublishAction, UpdateProfileAction, WebhookAction
from raylane.contracts import Codec, ContractError
from raylane.errors import DependencyError, RaylaneError
from raylane.monitoring.tracing import headers_with_context, http_headers_with_context
from raylane.redaction import mask_url, mask_urls

__all__ = [
    "ActionEvent",
    "ActionFailed",
    "Handler",
    "PublishHandler",
    "Sender",
    "UpdateProfileHandler",
    "WebhookHandler",
]

#: Sends (topic, key, value, headers) and waits for the broker's acknowledgement.
Sender = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]


def header_safe(value: str) -> str:
    """`value` as an HTTP header value: printable ASCII kept, anything else percent-encoded
    (an id is data from a producer; a non-ASCII or control character must not break the call)."""
    if value.isascii() and value.isprintable():
        return value
    from urllib.parse import quote

    return quote(value, safe="")


class ActionFailed(RaylaneError):
    """An action gave up on an event (retries exhausted, breaker open, rejected): action DLQ."""

    default_stage = "action"


@dataclass(frozen=True)
class ActionEvent:
    """A decoded event of an action topic and where it came from."""

    topic: str
    event: dict[str, Any]
    correlation_id: str

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id", ""))


class Handler(Protocol):
    name: str

    async def run(self, ev: ActionEvent) -> None:
        """Do the action; ActionFailed: give up (DLQ); DependencyError: retry the batch later."""
        ...


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return int(v.timestamp() * 1000)
    return str(v)


# -- update_profile ---------------------------------------------------------------------------


class UpdateProfileHandler:
    """Raises ``<view>:<feature>`` of the event's entity by `increase`, capped at `maximum`."""

    def __init__(self, spec: UpdateProfileAction, feast_repo: str, redis_url: str) -> None:
        from raylane.config import OnlineFeatureView
        from raylane.features import FeastRepo, OnlineFeatureReader

        self.spec = spec
        self.name = spec.name
        repo = FeastRepo.load(feast_repo, redis_url=redis_url)
        self.store = repo.store()
        fv = self.store.get_feature_view(spec.view)
        self.join_key = fv.entity_columns[0].name
        self.features = [f.name for f in fv.features]
        self.dtypes = {f.name: f.dtype.to_value_type().name for f in fv.features}
        if spec.feature not in self.features:
            raise RaylaneError(
                f"actions: feature {spec.feature!r} is not in feature view {spec.view} "
                f"(it has {self.features}); fix update_profile.feature",
                stage="config",
            )
        view = OnlineFeatureView(
            view=spec.view,
            entity_field=spec.entity_field,
            join_key=self.join_key,
            features=tuple(self.features),
        )
        self.reader = OnlineFeatureReader(self.store, [view], redis_url=redis_url)

    async def current(self, entity: str) -> dict[str, Any]:
        """The entity's online row, as Feast returns it (``<view>__<feature>``)."""
        row = await self.reader.read_feast_dict({self.spec.entity_field: [entity]})
        return {f: row[f"{self.spec.view}__{f}"][0] for f in self.features}

    async def run(self, ev: ActionEvent) -> None:
        entity = ev.event.get(self.spec.entity_field)
        if entity is None:
            raise ActionFailed(f"event has no {self.spec.entity_field!r}; update_profile needs it")
        row = await self.current(str(entity))  # DependencyError when Redis fails
        old = row.get(self.spec.feature)
        base = float(old) if old is not None else 0.0
        row[self.spec.feature] = min(self.spec.maximum, base + self.spec.increase)
        if self.dtypes[self.spec.feature].startswith("INT"):
            row[self.spec.feature] = int(row[self.spec.feature])
        now = datetime.now(UTC)
        import pandas as pd

        df = pd.DataFrame(
            [{self.join_key: str(entity), **row, "event_timestamp": now, "created": now}]
        )
        try:
            await asyncio.to_thread(self.store.write_to_online_store, self.spec.view, df)
        except Exception as e:
            raise DependencyError(
                f"update_profile: writing {self.spec.view} for {entity} failed: {e}", stage="action"
            ) from e

    async def aclose(self) -> None:
        await self.reader.aclose()


# -- webhook ----------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failed attempt worth retrying (connection error, timeout, 5xx, 408, 429)."""


class _BreakerMetric(pybreaker.CircuitBreakerListener):
    def __init__(self, pipeline: str, handler: str) -> None:
        self.gauge = ACTION_METRICS.breaker_open.labels(pipeline=pipeline, handler=handler)
        self.gauge.set(0)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.gauge.set(1 if new_state.name == pybreaker.STATE_OPEN else 0)


class WebhookHandler:
    """POST JSON with retries + exponential backoff, behind a breaker counting failed events."""

    def __init__(
        self, spec: WebhookAction, pipeline: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.pipeline = pipeline
        self.client = client or httpx.AsyncClient(timeout=spec.timeout_s)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=spec.breaker.fail_max,
            reset_timeout=spec.breaker.reset_timeout_s,
            name=f"{pipeline}:{spec.name}",
            listeners=[_BreakerMetric(pipeline, spec.name)],
        )
        self._lab = {"pipeline": pipeline, "handler": spec.name}

    def _retried(self, state: RetryCallState) -> None:
        ACTION_METRICS.retried.labels(**self._lab).inc()

    async def _attempt(self, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            r = await self.client.post(self.spec.url, content=body, headers=dict(headers))
        except httpx.HTTPError as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise ActionFailed(
                f"webhook {mask_url(self.spec.url)} rejected the event: "
                f"HTTP {r.status_code} {r.text[:200]}"
            )

    async def _deliver(self, body: bytes, headers: Mapping[str, str]) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.spec.attempts),
            wait=wait_exponential(multiplier=self.spec.backoff_s, max=self.spec.backoff_max_s),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._retried,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt(body, headers)

    async def run(self, ev: ActionEvent) -> None:
        payload = {
            "action": self.name,
            "pipeline": self.pipeline,
            "topic": ev.topic,
            "correlation_id": ev.correlation_id,
            "event": ev.event,
        }
        body = json.dumps(payload, default=_json_default).encode()
        headers = http_headers_with_context(
            {
                "content-type": "application/json",
                "x-correlation-id": header_safe(ev.correlation_id),
                "raylane-correlation-id": header_safe(ev.correlation_id),
                "idempotency-key": header_safe(ev.event_id),
                **self.spec.headers,
            }
        )
        try:
            with self.breaker.calling():
                await self._deliver(body, headers)
        except pybreaker.CircuitBreakerError as e:
            if isinstance(e.__context__, _Retryable):  # this very failure tripped the breaker
                raise ActionFailed(
                    f"webhook {mask_url(self.spec.url)} failed after {self.spec.attempts} "
                    f"attempts: {e.__context__}; its circuit breaker is now open"
                ) from e
            raise ActionFailed(
                f"webhook {mask_url(self.spec.url)}: circuit breaker open after repeated failures "
                f"(retrying after {self.spec.breaker.reset_timeout_s:g} s)"
            ) from e
        except _Retryable as e:
            raise ActionFailed(
                f"webhook {mask_url(self.spec.url)} failed after {self.spec.attempts} attempts: "
                f"{mask_urls(str(e))}"
            ) from e

    async def aclose(self) -> None:
        await self.client.aclose()


# -- publish ----------------------------------------------------------------------------------


class PublishHandler:
    """Emits the derived event: the target contract's fields taken from the event, plus `set`."""

    def __init__(self, spec: PublishAction, codec: Codec, send: Sender, key_field: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.codec = codec
        self.send = send
        self.key_field = key_field

    async def run(self, ev: ActionEvent) -> None:
        rec = {f: ev.event.get(f) for f in self.codec.field_names}
        rec.update(self.spec.set)
        rec["correlation_id"] = ev.correlation_id
        if self.spec.time_field:
            rec[self.spec.time_field] = int(time.time() * 1000)
        try:
            value = self.codec.encode(rec)
        except ContractError as e:
            raise ActionFailed(
                f"publish: the derived {self.spec.output.contract} event is invalid: {e.message}"
            ) from e
        cid = ev.correlation_id.encode()
        headers = headers_with_context(
            [
                ("correlation_id", cid),
                ("raylane.correlation_id", cid),
                ("event_id", ev.event_id.encode()),
            ]
        )
        await self.send(
            self.spec.output.topic, str(ev.event.get(self.key_field, "")).encode(), value, headers
        )
