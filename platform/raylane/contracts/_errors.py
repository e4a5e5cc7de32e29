"""Typed contract errors: every way an event or a schema can fail its contract.

All are :class:`raylane.errors.ContractError` subclasses, so the ingress routes
them to the DLQ by reading ``retriable`` / ``stage`` / ``error_class`` and never
needs ``isinstance`` chains. Decoding errors carry stage ``decode``; field-level
errors (:class:`ContractViolation` and below) carry stage ``validate``; registry
errors carry stage ``schema_registry``.
"""

from __future__ import annotations

from raylane.errors import ContractError

__all__ = [
    "BadMagicByte",
    "ContractViolation",
    "CorruptEvent",
    "EmptyEvent",
    "EventTimeOutOfRange",
    "EventTooLarge",
    "InvalidJson",
    "InvalidSchema",
    "LimitExceeded",
    "MissingField",
    "NonFiniteNumber",
    "SchemaMismatch",
    "SchemaNotFound",
    "SchemaRegistryError",
    "TrailingBytes",
    "TruncatedEvent",
    "UnknownSchemaId",
    "UnsupportedFormat",
    "WrongType",
]


class EventTooLarge(ContractError):
    """The payload is larger than the codec's ``max_event_bytes``; nothing was parsed."""

    default_stage = "decode"


class EmptyEvent(ContractError):
    """The payload has no bytes at all (or is a Kafka tombstone)."""

    default_stage = "decode"


class UnsupportedFormat(ContractError):
    """The payload is in a wire format this codec does not accept."""

    default_stage = "decode"


class BadMagicByte(UnsupportedFormat):
    """The first byte is neither the Confluent magic byte 0 nor the start of a JSON object."""


class CorruptEvent(ContractError):
    """The Avro body cannot be read with its writer schema (bad union index, bad UTF-8...)."""

    default_stage = "decode"


class TruncatedEvent(CorruptEvent):
    """The payload ends before its header or its body is complete."""


class TrailingBytes(CorruptEvent):
    """The body has bytes left over after the writer schema consumed a whole record."""


class UnknownSchemaId(ContractError):
    """The schema id in the header is not registered."""

    default_stage = "decode"


class SchemaMismatch(ContractError):
    """The writer schema cannot be resolved to the codec's reader schema (another subject)."""

    default_stage = "decode"


class InvalidJson(ContractError):
    """A payload that looks like JSON does not parse as one JSON object."""

    default_stage = "decode"


class ContractViolation(ContractError):
    """A record's field does not satisfy the schema.

    Attributes:
        path: the field path, e.g. ``amount`` or ``features['velocity']``; empty for
            the record itself.
    """

    default_stage = "validate"

    def __init__(self, message: str, *, path: str = "", stage: str | None = None) -> None:
        super().__init__(message, stage=stage)
        self.path = path


class MissingField(ContractViolation):
    """A field without a default is absent."""


class WrongType(ContractViolation):
    """A field holds a value of the wrong type (or out of range for it)."""


class LimitExceeded(ContractError):
    """A record's key, headers or a string field is larger than the pipeline's input limits
    (``input.max_key_bytes``, ``input.max_header_bytes``, ``input.max_string_chars``)."""

    default_stage = "validate"


class EventTimeOutOfRange(ContractViolation):
    """An event's ``event_time`` is too far from its record's broker timestamp (the pipeline's
    ``input.max_future_skew_s`` / ``input.max_event_age_s``)."""


class NonFiniteNumber(WrongType):
    """A float or double field holds NaN or an infinity (JSON ``NaN``/``1e999``, an Avro
    double's bit pattern): no window sum or model can use it, so it is rejected at validation."""


class SchemaRegistryError(ContractError):
    """Root of schema registry errors (unknown subject or id, unparsable schema)."""

    default_stage = "schema_registry"


class SchemaNotFound(SchemaRegistryError):
    """A subject, version or schema id is not registered."""


class InvalidSchema(SchemaRegistryError):
    """A schema handed to the registry is not valid Avro."""
