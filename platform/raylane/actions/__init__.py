"""raylane.actions: the action layer that turns decisions into automation.

An :class:`ActionRunner` consumes the action topics named in a pipeline's ``actions``
config (e.g. ``payments.flagged``) and runs each topic's handlers once per event_id,
even when events are replayed (a Redis ``SET NX`` claim per handler and event, with a
TTL). Handlers: ``update_profile`` (raise the user's risk profile in the online store),
``webhook`` (POST with retries, backoff and a breaker; then the action DLQ) and
``publish`` (a derived event under its own contract).
"""

from raylane.actions.handlers import (
    ActionEvent,
    ActionFailed,
    Handler,
    PublishHandler,
    UpdateProfileHandler,
    WebhookHandler,
)
from raylane.actions.metrics import ACTION_METRICS
from raylane.actions.runner import ActionRunner, build_runner, dedupe_key

__all__ = [
    "ACTION_METRICS",
    "ActionEvent",
    "ActionFailed",
    "ActionRunner",
    "Handler",
    "PublishHandler",
    "UpdateProfileHandler",
    "WebhookHandler",
    "build_runner",
    "dedupe_key",
]
