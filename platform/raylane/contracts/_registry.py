"""Schema registry: the small Protocol every backend implements, and the file backend.

The file backend is the default: subjects, versions and global schema ids live
under version control in a directory (by default ``contracts/registry/`` inside
the package) so a pull request that changes a contract shows the new version and
id in its diff. Layout::

    registry/
      index.json                          {"schemas": {id: file},
                                           "subjects": {subject: [{version, id}]}}
      payments.initiated-value.v1.json    the schema text of id 1 (named after where it was
                                          first registered)

Semantics follow Confluent Schema Registry: subjects are ``<topic>-value``
(TopicNameStrategy), versions count from 1 per subject, ids are global and the
same schema registered under two subjects shares one id. Registering a schema
identical (ignoring whitespace and key order) to one already under the subject
returns the existing id. ``register`` stores without checking compatibility
(like an admin import); :func:`raylane.contracts.register_checked` is the gate
that checks the subject's compatibility level first. Levels are kept per subject
in ``index.json`` under ``"compatibility"`` (absent: BACKWARD).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import fastavro
from fastavro.schema import SchemaParseException, UnknownType

from raylane.contracts._compat import COMPATIBILITY_LEVELS, DEFAULT_COMPATIBILITY
from raylane.contracts._errors import InvalidSchema, SchemaNotFound

__all__ = ["BUILTIN_REGISTRY_DIR", "FileSchemaRegistry", "RegisteredSchema", "SchemaRegistry"]

#: The committed registry shipped with the package.
BUILTIN_REGISTRY_DIR = Path(__file__).resolve().parent / "registry"

_INDEX = "index.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject: its global id and the schema parsed by fastavro."""

    subject: str
    version: int
    id: int
    schema: dict[str, Any] = field(repr=False)
    #: The schema as registered (JSON text), for compatibility checkers and REST backends.
    text: str = field(default="", repr=False, compare=False)


@runtime_checkable
class SchemaRegistry(Protocol):
    """What the codec and the tooling need from a schema registry backend."""

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register `schema` under `subject`; return its global id (existing id if identical)."""
        ...

    def get_by_id(self, schema_id: int) -> dict[str, Any]:
        """The parsed schema with global id `schema_id`; raises SchemaNotFound."""
        ...

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        """One registered version of `subject`; raises SchemaNotFound."""
        ...

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of `subject`; raises SchemaNotFound."""
        ...

    def versions(self, subject: str) -> list[int]:
        """Registered version numbers of `subject`, ascending (empty if unknown)."""
        ...

    def subjects(self) -> list[str]:
        """All subjects, sorted."""
        ...

    def compatibility(self, subject: str) -> str:
        """The subject's compatibility level (the registry default when it has none)."""
        ...

    def set_compatibility(self, subject: str, level: str) -> str:
        """Set the subject's compatibility level; returns it."""
        ...


def _load_schema_obj(schema: str | Mapping[str, Any]) -> Any:
    """The JSON value of `schema` (text or mapping), checked to parse as Avro."""
    if isinstance(schema, str):
        try:
            obj = json.loads(schema)
        except ValueError as e:
            raise InvalidSchema(f"schema is not valid JSON: {e}") from e
    else:
        obj = json.loads(json.dumps(schema))  # detach from the caller's (possibly mutable) object
    _parse(obj)
    return obj


def _parse(obj: Any) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = fastavro.parse_schema(obj)  # type: ignore[assignment]
        return parsed
    except (
        SchemaParseException,
        UnknownType,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as e:
        raise InvalidSchema(f"schema is not valid Avro: {type(e).__name__}: {e}") from e


def _canonical(obj: Any) -> str:
    """Identity used for idempotent registration: same JSON up to whitespace and key order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class FileSchemaRegistry:
    """A schema registry kept as JSON files in a directory (default: the committed one).

    Reads are cached; the index is re-read when its file changes on disk, so a
    schema registered by another process is found by id. Writes take an exclusive
    lock on the directory and replace files atomically.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else BUILTIN_REGISTRY_DIR
        self._index: dict[str, Any] = {"schemas": {}, "subjects": {}}
        self._stamp: tuple[int, int, int] | None = None
        self._texts: dict[int, str] = {}
        self._parsed: dict[int, dict[str, Any]] = {}
        self._refresh()

    def __repr__(self) -> str:
        return f"FileSchemaRegistry({str(self.path)!r})"

    # -- reads -----------------------------------------------------------------

    def get_by_id(self, schema_id: int) -> dict[str, Any]:
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        if str(schema_id) not in self._index["schemas"]:
            self._refresh()
        return self._parsed_by_id(schema_id)

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        entries = self._entries(subject)
        for e in entries:
            if e["version"] == version:
                return self._registered(subject, e)
        raise SchemaNotFound(
            f"subject {subject} has no version {version} in {self}; "
            f"versions: {[e['version'] for e in entries]}"
        )

    def latest(self, subject: str) -> RegisteredSchema:
        return self._registered(subject, self._entries(subject)[-1])

    def versions(self, subject: str) -> list[int]:
        self._refresh()
        return [e["version"] for e in self._index["subjects"].get(subject, [])]

    def subjects(self) -> list[str]:
        self._refresh()
        return sorted(self._index["subjects"])

    def compatibility(self, subject: str) -> str:
        self._refresh()
        return str(self._index.get("compatibility", {}).get(subject, DEFAULT_COMPATIBILITY))

    def set_compatibility(self, subject: str, level: str) -> str:
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise InvalidSchema(
                f"compatibility {level!r} is not one of {list(COMPATIBILITY_LEVELS)}"
            )
        with self._locked():
            self._refresh(force=True)
            self._index.setdefault("compatibility", {})[subject] = level
            self._write(_INDEX, json.dumps(self._index, indent=2, sort_keys=True) + "\n")
            self._stamp = self._index_stamp()
        return level

    # -- writes ----------------------------------------------------------------

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        if not subject:
            raise InvalidSchema(
                "subject must be a non-empty string, e.g. 'payments.initiated-value'"
            )
        obj = _load_schema_obj(schema)
        canon = _canonical(obj)
        with self._locked():
            self._refresh(force=True)
            entries = self._index["subjects"].setdefault(subject, [])
            for e in entries:
                if _canonical(json.loads(self._text(e["id"]))) == canon:
                    return int(e["id"])
            version = entries[-1]["version"] + 1 if entries else 1
            schema_id = self._find_id(canon)
            if schema_id is None:
                schema_id = max((int(k) for k in self._index["schemas"]), default=0) + 1
                fname = f"{_UNSAFE.sub('_', subject)}.v{version}.json"
                self._write(fname, json.dumps(obj, indent=2) + "\n")
                self._index["schemas"][str(schema_id)] = fname
            entries.append({"version": version, "id": schema_id})
            self._write(_INDEX, json.dumps(self._index, indent=2, sort_keys=True) + "\n")
            self._stamp = self._index_stamp()
            return schema_id

    # -- internals -------------------------------------------------------------

    def _entries(self, subject: str) -> list[dict[str, int]]:
        entries = self._index["subjects"].get(subject)
        if not entries:
            self._refresh()
            entries = self._index["subjects"].get(subject)
        if not entries:
            raise SchemaNotFound(
                f"subject {subject} is not registered in {self}; known subjects: "
                f"{sorted(self._index['subjects'])}. Register it with "
                "raylane.contracts.register_contracts() or FileSchemaRegistry.register()"
            )
        return entries  # type: ignore[no-any-return]

    def _registered(self, subject: str, entry: Mapping[str, int]) -> RegisteredSchema:
        sid = int(entry["id"])
        return RegisteredSchema(
            subject, int(entry["version"]), sid, self._parsed_by_id(sid), self._text(sid)
        )

    def _find_id(self, canon: str) -> int | None:
        for key in self._index["schemas"]:
            if _canonical(json.loads(self._text(int(key)))) == canon:
                return int(key)
        return None

    def _text(self, schema_id: int) -> str:
        text = self._texts.get(schema_id)
        if text is None:
            fname = self._index["schemas"].get(str(schema_id))
            if fname is None:
                raise SchemaNotFound(f"schema id {schema_id} is not registered in {self}")
            text = (self.path / fname).read_text(encoding="utf-8")
            self._texts[schema_id] = text
        return text

    def _parsed_by_id(self, schema_id: int) -> dict[str, Any]:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            parsed = _parse(json.loads(self._text(schema_id)))
            self._parsed[schema_id] = parsed
        return parsed

    def _index_stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever index.json is replaced (new inode) or rewritten."""
        try:
            st = (self.path / _INDEX).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self, force: bool = False) -> None:
        stamp = self._index_stamp()
        if not force and stamp == self._stamp:
            return
        if stamp is None:
            self._index = {"schemas": {}, "subjects": {}}
        else:
            self._index = json.loads((self.path / _INDEX).read_text(encoding="utf-8"))
            self._index.setdefault("schemas", {})
            self._index.setdefault("subjects", {})
        self._stamp = stamp
        # ids never change meaning, so cached texts and parsed schemas stay valid

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, name: str, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
