"""A local HTTP server speaking the part of the Confluent Schema Registry REST API raylane uses.

For tests and demos of the ``confluent`` registry backend without a JVM: a FastAPI
app backed by a :class:`~raylane.contracts.FileSchemaRegistry` directory, with
compatibility enforced on registration by :func:`raylane.contracts.check_compatibility`
(409, like the real registry). Error bodies follow Confluent's
``{"error_code": ..., "message": ...}``. Run it with :class:`LocalSchemaRegistry`::

    with LocalSchemaRegistry(tmp_path) as sr:
        registry = ConfluentSchemaRegistry(sr.url)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Self

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from raylane.contracts._compat import (
    COMPATIBILITY_LEVELS,
    DEFAULT_COMPATIBILITY,
    check_compatibility,
    format_issues,
)
from raylane.contracts._errors import SchemaNotFound
from raylane.contracts._registry import FileSchemaRegistry
from raylane.errors import RaylaneError

__all__ = ["LocalSchemaRegistry", "schema_registry_app"]

_CT = "application/vnd.schemaregistry.v1+json"


class _Err(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def schema_registry_app(directory: str | os.PathLike[str]) -> FastAPI:
    """The REST app over a file registry in `directory` (created if missing)."""
    reg = FileSchemaRegistry(directory)
    config: dict[str, str] = {}  # subject-level compatibility ("" key: global)
    app = FastAPI(title="raylane local schema registry")

    @app.exception_handler(_Err)
    async def _err(_: Request, e: _Err) -> JSONResponse:
        return JSONResponse({"error_code": e.code, "message": e.message}, e.status, media_type=_CT)

    def level(subject: str) -> str:
        return config.get(subject) or config.get("", DEFAULT_COMPATIBILITY)

    def versions_of(subject: str) -> list[int]:
        vs = reg.versions(subject)
        if not vs:
            raise _Err(404, 40401, f"Subject '{subject}' not found.")
        return vs

    def version_body(subject: str, version: str) -> dict[str, Any]:
        vs = versions_of(subject)
        v = vs[-1] if version in ("latest", "-1") else int(version)
        if v not in vs:
            raise _Err(404, 40402, f"Version {version} not found.")
        r = reg.get_version(subject, v)
        return {"subject": subject, "version": r.version, "id": r.id, "schema": r.text}

    def schema_text(body: dict[str, Any]) -> str:
        if body.get("schemaType", "AVRO") != "AVRO" or body.get("references"):
            raise _Err(422, 42201, "only AVRO schemas without references are supported here")
        text = body.get("schema")
        if not isinstance(text, str):
            raise _Err(422, 42201, "request has no schema string")
        return text

    def issues(subject: str, text: str, against: list[int] | None = None) -> list[str]:
        hist = [reg.get_version(subject, v) for v in (against or reg.versions(subject))]
        try:
            found = check_compatibility(
                subject,
                text,
                [h.text for h in hist],
                level(subject),
                versions=[h.version for h in hist],
            )
        except RaylaneError as e:
            raise _Err(422, 42201, f"Invalid schema: {e.message}") from e
        return format_issues(found)

    @app.get("/subjects")
    def subjects() -> list[str]:
        return reg.subjects()

    @app.get("/subjects/{subject}/versions")
    def versions(subject: str) -> list[int]:
        return versions_of(subject)

    @app.get("/subjects/{subject}/versions/{version}")
    def get_version(subject: str, version: str) -> dict[str, Any]:
        return version_body(subject, version)

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        text = schema_text(body)
        canon = json.dumps(json.loads(text), sort_keys=True)
        for v in reg.versions(subject):  # an identical schema returns its id, unchecked
            r = reg.get_version(subject, v)
            if json.dumps(json.loads(r.text), sort_keys=True) == canon:
                return {"id": r.id}
        bad = issues(subject, text)
        if bad:
            raise _Err(
                409,
                409,
                "Schema being registered is incompatible with an earlier schema: " + "; ".join(bad),
            )
        try:
            return {"id": reg.register(subject, text)}
        except RaylaneError as e:
            raise _Err(422, 42201, f"Invalid schema: {e.message}") from e

    @app.get("/schemas/ids/{schema_id}")
    def by_id(schema_id: int) -> dict[str, Any]:
        try:
            reg.get_by_id(schema_id)
        except SchemaNotFound as e:
            raise _Err(404, 40403, f"Schema {schema_id} not found") from e
        for subject in reg.subjects():
            for v in reg.versions(subject):
                r = reg.get_version(subject, v)
                if r.id == schema_id:
                    return {"schema": r.text}
        raise _Err(404, 40403, f"Schema {schema_id} not found")

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def test_compat(subject: str, version: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        text = schema_text(body)
        against = [version_body(subject, version)["version"]]
        bad = issues(subject, text, against)
        return {"is_compatible": not bad, "messages": bad}

    @app.get("/config")
    def get_global() -> dict[str, str]:
        return {"compatibilityLevel": config.get("", DEFAULT_COMPATIBILITY)}

    @app.get("/config/{subject}")
    def get_config(subject: str) -> dict[str, str]:
        if subject not in config:
            raise _Err(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return {"compatibilityLevel": config[subject]}

    def put(key: str, body: dict[str, Any]) -> dict[str, str]:
        lvl = str(body.get("compatibility", "")).upper()
        if lvl not in COMPATIBILITY_LEVELS:
            raise _Err(422, 42203, f"Invalid compatibility level {lvl!r}")
        config[key] = lvl
        return {"compatibility": lvl}

    @app.put("/config")
    def put_global(body: dict[str, Any] = Body(...)) -> dict[str, str]:  # noqa: B008
        return put("", body)

    @app.put("/config/{subject}")
    def put_config(subject: str, body: dict[str, Any] = Body(...)) -> dict[str, str]:  # noqa: B008
        return put(subject, body)

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalSchemaRegistry:
    """Runs :func:`schema_registry_app` with uvicorn on a free local port, in a thread."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(
            schema_registry_app(directory),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(
            target=self._server.run, name="local-schema-registry", daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"local schema registry did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
