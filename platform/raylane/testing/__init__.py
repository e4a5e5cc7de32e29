"""In-package test helpers: the simulated world of users, merchants and labeled payments."""

from raylane.testing.payments import CONTRACT_FIELDS, LabeledEvent, PaymentStream, to_ms
from raylane.testing.simulator import CATEGORIES, USER_PAYMENT_INTERVAL_S, World, events_frame

__all__ = [
    "CATEGORIES",
    "CONTRACT_FIELDS",
    "USER_PAYMENT_INTERVAL_S",
    "LabeledEvent",
    "PaymentStream",
    "World",
    "events_frame",
    "to_ms",
]
