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
from raylane.redaction import mask_url, mask_urls
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
            f"MLflow at {mask_url(uri)} is unreachable ({e.strerror or e}); run "
            "`raylane dev up` or set MLFLOW_TRACKING_URI to a running tracking server",
            stage="registry",
        ) from e


_MISSING_FLAVOR = re.compile(r'does not have the "(?P<flavor>[^"]+)" flavor')


def missing_flavor(e: MlflowException) -> str | None:
    """The flavor MLflow says a model lacks, if that is the error.

    MLflow reports it with RESOURCE_DOES_NOT_EXIST, the code of a missing model, so it is
    told apart by its message: the model exists, it was logged with other flavors.
    """
    m = _MISSING_FLAVOR.search(str(e))
    return m.group("flavor") if m else None


def is_not_found(e: MlflowException) -> bool:
    """Whether MLflow says the thing asked for does not exist (vs. any other failure)."""
    if missing_flavor(e) is not None:
        return False
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
    """Wrap MLflow errors raised while doing `what` into a ModelError that names the fix.

    An unreachable server is a DependencyError (retriable: a hot swap tries again at its
    next poll instead of refusing the version).
    """
    try:
        yield
    except (ModelError, DependencyError):
        raise
    except MlflowException as e:
        cls = DependencyError if _connection_failed(e) else ModelError
        raise cls(_message(what, uri, name, e), stage="registry") from e
    except (OSError, ConnectionError) as e:
        raise DependencyError(
            f"{what} failed: MLflow at {mask_url(uri)} is unreachable ({mask_urls(str(e))}); run "
            "`raylane dev up` or "
            "set MLFLOW_TRACKING_URI to a running tracking server",
            stage="registry",
        ) from e


def _connection_failed(e: MlflowException) -> bool:
    text = str(e).lower()
    return "max retries" in text or "connection" in text


def _message(what: str, uri: str, name: str | None, e: MlflowException) -> str:
    code = getattr(e, "error_code", "")
    text = str(e)
    flavor = missing_flavor(e)
    if flavor is not None:
        thing = f"model {name}" if name else "the model"
        return (
            f"{what} failed: {thing} has no {flavor} flavor (it exists, logged with other "
            "flavors: see the `flavors:` of its MLmodel file); this deployment loads "
            f"{flavor}; set `flavor:` in the model config to one of the model's flavors, or "
            f"register a {flavor} model"
        )
    if is_not_found(e):
        thing = f"registered model {name}" if name else "the model"
        return (
            f"{what} failed: {thing} was not found in MLflow at {mask_url(uri)}; "
            + _BOOTSTRAP.replace("<name>", name or "<name>")
        )
    if _connection_failed(e):
        return (
            f"{what} failed: MLflow at {mask_url(uri)} is unreachable "
            f"({mask_urls(text.splitlines()[0])}); run "
            "`raylane dev up` or set MLFLOW_TRACKING_URI to a running tracking server"
        )
    first = mask_urls(text.splitlines()[0]) if text else code
    return f"{what} failed against MLflow at {mask_url(uri)}: {first}"
