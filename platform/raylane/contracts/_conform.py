"""Field-path validation of plain Python/JSON values against a parsed Avro schema.

fastavro validates fast but reports ``raylane.PaymentInitiated.amount`` with the
whole datum; users need "amount: expected double, got str '12.5'". This walker
names the failing path and the wrong value, and, for JSON payloads, normalises
the value to what the Avro reader would produce: defaults filled in, ints
widened to floats for float/double, unknown record keys dropped, plain (not
Avro-JSON-wrapped) union values. It is hand-written because neither fastavro
nor the ``avro`` package validate plain JSON with path-naming errors.

It also provides :func:`reading_schema`: the schema with time logical types
removed, because the platform represents times as epoch integers (window
features and training read ``event_time`` as int milliseconds).
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import fastavro

from raylane.contracts._errors import ContractViolation, MissingField, NonFiniteNumber, WrongType

__all__ = ["conform", "describe", "reading_schema"]

_TIME_LOGICAL = {
    "timestamp-millis": _dt.datetime,
    "timestamp-micros": _dt.datetime,
    "timestamp-nanos": _dt.datetime,
    "local-timestamp-millis": _dt.datetime,
    "local-timestamp-micros": _dt.datetime,
    "local-timestamp-nanos": _dt.datetime,
    "date": _dt.date,
    "time-millis": _dt.time,
    "time-micros": _dt.time,
}
_INT_RANGE = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def reading_schema(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """`parsed` re-parsed without time logical types, so readers return epoch integers."""

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            if node.get("logicalType") in _TIME_LOGICAL and node.get("type") in ("int", "long"):
                return node["type"]
            return {k: strip(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    reader: dict[str, Any] = fastavro.parse_schema(strip(parsed))  # type: ignore[assignment]
    return reader


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(schema: Any, named: Mapping[str, Any]) -> str:
    """Human name of a schema node: ``double``, ``null or string``, ``map of double``..."""
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else f"record {schema}"
    if isinstance(schema, list):
        return " or ".join(describe(s, named) for s in schema)
    t = schema.get("type")
    if t in ("record", "error"):
        return f"record {schema.get('name')}"
    if t == "map":
        return f"map of {describe(schema['values'], named)}"
    if t == "array":
        return f"array of {describe(schema['items'], named)}"
    if t == "enum":
        return f"enum {schema.get('name')} {list(schema.get('symbols', []))}"
    if t == "fixed":
        return f"fixed {schema.get('name')} of {schema.get('size')} bytes"
    logical = schema.get("logicalType")
    return f"{t} ({logical})" if logical else str(t)


def _wrong(path: str, expected: str, value: Any, why: str = "") -> WrongType:
    where = path or "record"
    got = f"{type(value).__name__} {_short(value)}"
    return WrongType(f"{where}: expected {expected}, got {got}{why}", path=path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def conform(schema: Any, value: Any, named: Mapping[str, Any], path: str = "") -> Any:
    """`value` checked against `schema` and normalised as a reader would return it.

    Raises :class:`MissingField` or :class:`WrongType` naming the first bad path.
    `named` is the parsed schema's ``__named_schemas``.
    """
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _primitive(schema, value, path)
        if schema not in named:
            raise ContractViolation(f"{path or 'record'}: schema references unknown type {schema}")
        return conform(named[schema], value, named, path)
    if isinstance(schema, list):
        return _union(schema, value, named, path)
    t = schema.get("type")
    if t in ("record", "error"):
        return _record(schema, value, named, path)
    if t == "map":
        if not isinstance(value, Mapping):
            raise _wrong(path, describe(schema, named), value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _wrong(f"{path}[{k!r}]", "a string map key", k)
            out[k] = conform(schema["values"], v, named, f"{path}[{k!r}]")
        return out
    if t == "array":
        if not isinstance(value, (list, tuple)):
            raise _wrong(path, describe(schema, named), value)
        return [conform(schema["items"], v, named, f"{path}[{i}]") for i, v in enumerate(value)]
    if t == "enum":
        if not isinstance(value, str) or value not in schema.get("symbols", ()):
            raise _wrong(path, describe(schema, named), value)
        return value
    if t == "fixed":
        if not isinstance(value, (bytes, bytearray)) or len(value) != schema.get("size"):
            raise _wrong(path, describe(schema, named), value)
        return bytes(value)
    logical = schema.get("logicalType")
    accepted = _TIME_LOGICAL.get(logical)
    if accepted is not None and isinstance(value, accepted):
        return value
    if (logical == "decimal" and isinstance(value, Decimal)) or (
        logical == "uuid" and isinstance(value, uuid.UUID)
    ):
        return value
    if isinstance(t, str) and t in _PRIMITIVES:
        return _primitive(t, value, path)
    return conform(t, value, named, path)


def _primitive(t: str, value: Any, path: str) -> Any:
    if t == "null":
        if value is None:
            return None
    elif t == "string":
        if isinstance(value, str):
            if value.isascii() or _utf8_encodable(value):
                return value
            raise _wrong(path, t, value, " (not encodable as UTF-8: lone surrogate)")
    elif t in ("double", "float"):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                raise NonFiniteNumber(
                    f"{path or 'record'}: expected a finite {t}, got {number!r}", path=path
                )
            return number
    elif t in ("long", "int"):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            lo, hi = _INT_RANGE[t]
            number = int(value)
            if not lo <= number <= hi:
                raise _wrong(path, t, value, f" (out of range {lo}..{hi})")
            return number
    elif t == "boolean":
        if isinstance(value, bool):
            return value
    elif t == "bytes":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str):  # Avro's JSON encoding of bytes: code points 0-255
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                raise _wrong(path, "bytes", value, " (characters above \\u00ff)") from None
    raise _wrong(path, t, value)


def _utf8_encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _union(branches: list[Any], value: Any, named: Mapping[str, Any], path: str) -> Any:
    if value is None and "null" in branches:
        return None
    candidates = [b for b in branches if b != "null"]
    deepest: ContractViolation | None = None
    for branch in candidates:
        try:
            return conform(branch, value, named, path)
        except ContractViolation as e:
            # an error below this path (inside a record/map branch) is the useful one
            if e.path != path and (deepest is None or len(e.path) > len(deepest.path)):
                deepest = e
    if deepest is not None and len(candidates) == 1:
        raise deepest
    raise _wrong(path, describe(branches, named), value)


def _record(schema: Mapping[str, Any], value: Any, named: Mapping[str, Any], path: str) -> Any:
    if not isinstance(value, Mapping):
        raise _wrong(path, describe(schema, named), value)
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        name = f["name"]
        p = _join(path, name)
        if name in value:
            out[name] = conform(f["type"], value[name], named, p)
        elif "default" in f:
            out[name] = conform(f["type"], f["default"], named, p)
        else:
            raise MissingField(
                f"{p}: missing required field (expected {describe(f['type'], named)}, no default)",
                path=p,
            )
    return out


def find_non_finite(value: Any, path: str = "") -> NonFiniteNumber | None:
    """The first NaN or infinity in a decoded record (any depth), as an error naming its path.

    Avro's binary encoding carries NaN and infinities in doubles, and fastavro reads them as
    they are; this walks what it returned (records, maps, arrays), which costs ~1 µs for a
    flat event of ten fields.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            return NonFiniteNumber(
                f"{path or 'record'}: expected a finite number, got {value!r}", path=path
            )
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, (float, Mapping, list)):
                found = find_non_finite(v, _join(path, str(k)))
                if found is not None:
                    return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (float, Mapping, list)):
                found = find_non_finite(v, f"{path}[{i}]")
                if found is not None:
                    return found
    return None
