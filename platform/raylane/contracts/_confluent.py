"""A :class:`SchemaRegistry` backed by a Confluent Schema Registry REST API.

The REST calls are made by ``confluent_kafka.schema_registry.SchemaRegistryClient``
(Confluent's own client, which caches ids and versions); this module only maps
its answers and errors onto raylane's types. Works against Confluent Schema
Registry, Karapace, Redpanda and Apicurio's ccompat API. Endpoints used:

* ``POST /subjects/{subject}/versions`` (register; the server checks compatibility)
* ``GET /schemas/ids/{id}``
* ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``
* ``GET /config/{subject}`` (falling back to ``GET /config``), ``PUT /config/{subject}``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as _SRError

from raylane.contracts._compat import COMPATIBILITY_LEVELS, IncompatibleSchema
from raylane.contracts._errors import InvalidSchema, SchemaNotFound, SchemaRegistryError
from raylane.contracts._registry import RegisteredSchema, _load_schema_obj, _parse
from raylane.errors import DependencyError, RaylaneError
from raylane.redaction import mask_url, mask_urls

__all__ = ["ConfluentSchemaRegistry"]

# Confluent error codes (https://docs.confluent.io/platform/current/schema-registry/develop/api.html)
_NOT_FOUND = {40401, 40402, 40403, 40408}
_INCOMPATIBLE = 409
_INVALID = {42201, 42202, 42203}
#: HTTP answers about the caller, not the event: credentials, permissions, rate limits and
#: timeouts are fixed (or pass) without touching the event, so they pause and retry
_RETRIABLE_STATUS = {401, 403, 408, 429}


class ConfluentSchemaRegistry:
    """Schema registry client for the Confluent REST API (``url`` e.g. ``http://sr:8081``).

    `conf` is passed to ``SchemaRegistryClient`` (e.g. ``basic.auth.user.info``,
    ``ssl.ca.location``, ``timeout``).
    """

    def __init__(self, url: str, **conf: Any) -> None:
        self.url = mask_url(url)  # for messages; the client keeps the real one
        self._client = SchemaRegistryClient({"url": url, **conf})
        self._parsed: dict[int, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"ConfluentSchemaRegistry({self.url!r})"

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except _SRError as e:
            code = getattr(e, "error_code", None)
            status = getattr(e, "http_status_code", None)
            detail = mask_urls(str(getattr(e, "error_message", e)))
            msg = f"{what} at {self.url}: {detail} (error code {code})"
            if status in _RETRIABLE_STATUS:
                raise DependencyError(
                    f"{msg}: the schema registry refused the request (HTTP {status}); check "
                    "schema_registry's credentials (basic.auth.user.info) and permissions, or "
                    "wait out its rate limit; events wait and are retried",
                    stage="schema_registry",
                ) from e
            if code in _NOT_FOUND:
                raise SchemaNotFound(msg) from e
            if code == _INCOMPATIBLE:
                raise IncompatibleSchema(msg) from e
            if code in _INVALID:
                raise InvalidSchema(msg) from e
            if isinstance(status, int) and status < 500:
                raise SchemaRegistryError(msg) from e
            raise DependencyError(msg, stage="schema_registry") from e
        except RaylaneError:
            raise
        except Exception as e:
            raise DependencyError(
                f"{what}: schema registry at {self.url} did not answer ({mask_urls(str(e))}); "
                "is it up and "
                "is schema_registry.url right?",
                stage="schema_registry",
            ) from e

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        text = json.dumps(_load_schema_obj(schema))
        sid = self._call(
            f"registering {subject}", self._client.register_schema, subject, Schema(text, "AVRO")
        )
        return int(sid)

    def get_by_id(self, schema_id: int) -> dict[str, Any]:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            s = self._call(f"schema id {schema_id}", self._client.get_schema, schema_id)
            parsed = _parse(json.loads(s.schema_str))
            self._parsed[schema_id] = parsed
        return parsed

    def _registered(self, reg: Any, subject: str) -> RegisteredSchema:
        text = reg.schema.schema_str
        return RegisteredSchema(
            subject, int(reg.version), int(reg.schema_id), _parse(json.loads(text)), text
        )

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        reg = self._call(f"{subject} v{version}", self._client.get_version, subject, version)
        return self._registered(reg, subject)

    def latest(self, subject: str) -> RegisteredSchema:
        reg = self._call(f"latest {subject}", self._client.get_latest_version, subject)
        return self._registered(reg, subject)

    def versions(self, subject: str) -> list[int]:
        try:
            return sorted(
                int(v)
                for v in self._call(f"versions of {subject}", self._client.get_versions, subject)
            )
        except SchemaNotFound:
            return []

    def subjects(self) -> list[str]:
        return sorted(self._call("subjects", self._client.get_subjects))

    def compatibility(self, subject: str) -> str:
        try:
            return str(
                self._call(f"compatibility of {subject}", self._client.get_compatibility, subject)
            )
        except SchemaNotFound:  # no subject-level config: the global one applies
            return str(self._call("global compatibility", self._client.get_compatibility))

    def set_compatibility(self, subject: str, level: str) -> str:
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise InvalidSchema(
                f"compatibility {level!r} is not one of {list(COMPATIBILITY_LEVELS)}"
            )
        self._call(
            f"setting compatibility of {subject}", self._client.set_compatibility, subject, level
        )
        return level
