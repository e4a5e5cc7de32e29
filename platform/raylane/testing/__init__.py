"""In-package test helpers: the simulated world of users, merchants, labeled payments, their
delayed labels, activity."""

from raylane.testing.activity import ACTIVITY_FIELDS, ActivityStream, churn_traits
from raylane.testing.labels import LabelFeed
from raylane.testing.payments import CONTRACT_FIELDS, LabeledEvent, PaymentStream, to_ms
from raylane.testing.simulator import CATEGORIES, USER_PAYMENT_INTERVAL_S, World, events_frame

__all__ = [
    "ACTIVITY_FIELDS",
    "CATEGORIES",
    "CONTRACT_FIELDS",
    "USER_PAYMENT_INTERVAL_S",
    "ActivityStream",
    "LabelFeed",
    "LabeledEvent",
    "PaymentStream",
    "World",
    "churn_traits",
    "events_frame",
    "to_ms",
]
