"""Model references in the MLflow registry: resolve aliases, register versions, set aliases.

``resolve("models:/fraud@champion")`` pins an alias to a version
(``models:/fraud/3``) so a replica loads, logs and reports exactly one version even
if the alias moves while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raylane.errors import ModelError
from raylane.redaction import mask_url
from raylane.registry._mlflow import (
    boundary,
    client,
    is_not_found,
    parse_uri,
    resolve_tracking_uri,
)

__all__ = ["ModelRef", "register", "resolve", "set_alias"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One registered model version, and the alias it was resolved from (if any)."""

    name: str
    version: int
    alias: str | None
    uri_pinned: str
    run_id: str | None = None

    @classmethod
    def of(
        cls, name: str, version: int | str, alias: str | None = None, run_id: str | None = None
    ) -> ModelRef:
        return cls(name, int(version), alias, f"models:/{name}/{int(version)}", run_id)


def resolve(uri: str, *, tracking_uri: str | None = None) -> ModelRef:
    """Pin ``models:/name@alias`` or ``models:/name/version`` to one registered version.

    Raises ModelError naming the fix when the model, alias or version does not exist.
    """
    name, alias, version = parse_uri(uri)
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"resolving {uri}", tu, name=name):
        try:
            if alias is not None:
                mv = c.get_model_version_by_alias(name, alias)
            else:
                mv = c.get_model_version(name, str(version))
        except MlflowException as e:
            if not is_not_found(e):
                raise
            raise ModelError(_missing(c, tu, name, alias, version), stage="registry") from e
    return ModelRef.of(mv.name, mv.version, alias, mv.run_id or None)


def _missing(c: MlflowClient, tu: str, name: str, alias: str | None, version: int | None) -> str:
    """Say precisely what is missing: the registered model, the alias or the version."""
    try:
        rm = c.get_registered_model(name)
    except MlflowException as e:
        if not is_not_found(e):
            raise
        return (
            f"registered model {name} does not exist in MLflow at {mask_url(tu)}; run "
            f"`raylane bootstrap` (or `python models/{name}/train.py`)"
        )
    aliases = dict(getattr(rm, "aliases", {}) or {})
    if alias is not None:
        known = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
        return (
            f"registered model {name} has no alias {alias} (aliases: {known}); run "
            f"`raylane bootstrap`, or set it with `raylane promote {name}`"
        )
    return (
        f"registered model {name} has no version {version}; list versions in the MLflow "
        f"UI at {tu} or use an alias such as models:/{name}@champion"
    )


def register(
    model_uri: str,
    name: str,
    *,
    alias: str | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    tracking_uri: str | None = None,
) -> ModelRef:
    """Register the logged model at `model_uri` as a new version of `name`; optionally alias it.

    `model_uri` is what ``mlflow.<flavor>.log_model`` returns as ``model_info.model_uri``
    (``models:/<model_id>``) or a direct artifact location.
    """
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"registering {model_uri} as {name}", tu, name=name):
        try:
            c.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        model_id = None
        run_id = None
        if model_uri.startswith("models:/m-"):
            model_id = model_uri[len("models:/") :]
            run_id = c.get_logged_model(model_id).source_run_id
        elif model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/") :].split("/", 1)[0]
        mv = c.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags=dict(tags or {}),
            description=description,
            model_id=model_id,
        )
        if alias:
            c.set_registered_model_alias(name, alias, mv.version)
    return ModelRef.of(name, mv.version, alias, run_id)


def set_alias(
    name: str, alias: str, version: int | str, *, tracking_uri: str | None = None
) -> ModelRef:
    """Point `alias` of registered model `name` at `version`; returns the new reference."""
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"setting alias {name}@{alias} -> v{version}", tu, name=name):
        mv = c.get_model_version(name, str(version))
        c.set_registered_model_alias(name, alias, str(version))
    return ModelRef.of(name, version, alias, mv.run_id or None)


def version_tags(
    name: str, version: str | int, *, tracking_uri: str | None = None
) -> dict[str, str]:
    """The tags of one registered model version (approvals, promotion records)."""
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"reading the tags of {name} v{version}", tu, name=name):
        return dict(c.get_model_version(name, str(version)).tags or {})


def model_tags(name: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """The tags of a registered model (approval records, promotion history)."""
    tu = resolve_tracking_uri(tracking_uri)
    c = client(tu)
    with boundary(f"reading the tags of {name}", tu, name=name):
        return dict(c.get_registered_model(name).tags or {})
