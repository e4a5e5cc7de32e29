"""The MLflow boundary of the registry package: clients, URI parsing and error wrapping.

Every MLflow call of :mod:`raylane.registry` runs inside :func:`boundary`, which turns
MLflow's exceptions into one :class:`~raylane.errors.ModelError` whose message names
the model and the fix. Clients are built per call with an explicit tracking URI, so the
registry never changes MLflow's process-global state.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raylane.errors import DependencyError, ModelError
from raylane.settings import Settings

_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$"
)

_BOOTSTRAP = "run `raylane bootstrap` (or `python models/<name>/train.py`)"


def resolve_tracking_uri(explicit: str | None) -> str:
    """The tracking URI to use: `explicit`, else the environment / embedded stack's."""
    return explicit or Settings.load().mlflow_tracking_uri


def client(uri: str | None) -> MlflowClient:
    """An MLflow client bound to `uri` for both tracking and the model registry.

    A tracking server that does not accept connections fails fast here: MLflow itself
    retries with backoff for minutes before giving up.
    """
    u = resolve_tracking_uri(uri)
    check_reachable(u)
    return MlflowClient(tracking_uri=u, registry_uri=u)


def check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """Raise DependencyError (retriable) if an http(s) tracking server refuses connections."""
    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout_s).close()
    except OSError as e:
        raise DependencyError(
            f"MLflow at {uri} is unreachable ({e.strerror or e}); run `raylane dev up` or set "
            "MLFLOW_TRACKING_URI to a running tracking server",
            stage="registry",
        ) from e


def is_not_found(e: MlflowException) -> bool:
    """Whether MLflow says the thing asked for does not exist (vs. any other failure)."""
    code = getattr(e, "error_code", "")
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return True
    # MLflow reports a missing alias as INVALID_PARAMETER_VALUE "... alias x not found."
    return code == "INVALID_PARAMETER_VALUE" and "not found" in str(e).lower()


def parse_uri(uri: str) -> tuple[str, str | None, int | None]:
    """``models:/name@alias`` or ``models:/name/version`` as (name, alias, version)."""
    m = _URI.match(uri.strip())
    if not m:
        raise ModelError(
            f"{uri!r} is not a registry model URI; write models:/<name>@<alias> "
            "(e.g. models:/fraud@champion) or models:/<name>/<version>",
            stage="registry",
        )
    version = m.group("version")
    return m.group("name"), m.group("alias"), int(version) if version else None


@contextmanager
def boundary(what: str, uri: str, *, name: str | None = None) -> Iterator[None]:
    """Wrap MLflow errors raised while doing `what` into a ModelError that names the fix."""
    try:
        yield
    except (ModelError, DependencyError):
        raise
    except MlflowException as e:
        raise ModelError(_message(what, uri, name, e), stage="registry") from e
    except (OSError, ConnectionError) as e:
        raise ModelError(
            f"{what} failed: MLflow at {uri} is unreachable ({e}); run `raylane dev up` or "
            "set MLFLOW_TRACKING_URI to a running tracking server",
            stage="registry",
        ) from e


def _message(what: str, uri: str, name: str | None, e: MlflowException) -> str:
    code = getattr(e, "error_code", "")
    text = str(e)
    if is_not_found(e):
        thing = f"registered model {name}" if name else "the model"
        return f"{what} failed: {thing} was not found in MLflow at {uri}; " + _BOOTSTRAP.replace(
            "<name>", name or "<name>"
        )
    if "max retries" in text.lower() or "connection" in text.lower():
        return (
            f"{what} failed: MLflow at {uri} is unreachable ({text.splitlines()[0]}); run "
            "`raylane dev up` or set MLFLOW_TRACKING_URI to a running tracking server"
        )
    return f"{what} failed against MLflow at {uri}: {text.splitlines()[0] if text else code}"
