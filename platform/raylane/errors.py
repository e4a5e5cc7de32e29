"""One error root for raylane, with behavioural attributes.

Retry, DLQ and breaker policy read `retriable` and `stage` instead of chains of
`isinstance`. Third-party errors are wrapped once, at the boundary, with
`raise RaylaneError(...) from e`. Messages name the thing and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "ConfigError",
    "ContractError",
    "DependencyError",
    "ModelError",
    "ProcessingError",
    "PublishRejected",
    "RaylaneError",
    "StackError",
]


class RaylaneError(Exception):
    """Root of every error raylane raises on purpose.

    Attributes:
        retriable: retrying the same input later may succeed (a dead dependency);
            False means the input itself is bad (it belongs in a DLQ).
        stage: the data-path stage that raised (``decode``, ``validate``,
            ``features``, ``score``, ``publish``, ``config``, ``stack``...).
    """

    retriable: ClassVar[bool] = False
    default_stage: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage or self.default_stage

    @property
    def error_class(self) -> str:
        """Stable name used in DLQ headers and metrics labels."""
        return type(self).__name__


class ConfigError(RaylaneError):
    """A pipeline config is invalid; the message names the YAML path and the fix."""

    default_stage = "config"


class ContractError(RaylaneError):
    """An event does not satisfy its contract (bad bytes, unknown schema, bad field)."""

    default_stage = "decode"


class DependencyError(RaylaneError):
    """A dependency (Redis, a model, the broker) failed; the same input may succeed later."""

    retriable = True
    default_stage = "dependency"


class ModelError(RaylaneError):
    """A model could not be loaded or scored."""

    default_stage = "score"


class ProcessingError(RaylaneError):
    """A record failed the data path for a reason that is not a dependency outage (a poison
    record): it is isolated from its batch and dead-lettered; the rest is scored."""

    default_stage = "process"


class PublishRejected(RaylaneError):
    """Kafka refused some records of a write for good (a record over the size limit, an
    invalid topic, a topic this client may not write to): sending them again cannot succeed.

    Raised by a sink only when every other record of the write was acknowledged. `failed`
    maps the index of each refused record in the write to the Kafka error's class name
    (e.g. ``MessageSizeTooLargeError``). The ingress dead-letters the input of each refused
    output with this error class (stage ``publish``) instead of retrying forever.
    """

    default_stage = "publish"

    def __init__(
        self,
        message: str,
        *,
        failed: Mapping[int, str] | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message, stage=stage)
        self.failed: dict[int, str] = dict(failed or {})


class StackError(RaylaneError):
    """The embedded dev stack could not start or is unhealthy; the message says what to do."""

    default_stage = "stack"
