"""Signed promotions: a replica serves a version an alias names only if `raylane promote` (or
`rollback`) approved it.

Whoever can move an MLflow alias otherwise decides what scores payments. With a promotion key
set (``RAYLANE_PROMOTION_KEY`` or ``RAYLANE_PROMOTION_KEY_FILE``, the same secret for the
operators who promote and for the replicas), every alias move by raylane tags the version with
an HMAC-SHA256 over (model name, alias, version), ``raylane.approval.<alias>``; a replica
verifies it before it swaps to the version an alias moved to, and refuses (the old version
keeps serving; ``raylane_model_swaps_refused_total`` and a log line say why) a version whose
tag is missing or wrong: an alias moved in the MLflow UI or API, or a tag copied from another
version. Each approval is also recorded on the registered model (``raylane.approved.<alias>``:
the version and its signature), so a replica that *starts* while the alias names an unapproved
version serves the last approved one instead (and records the refusal); with no approved
version at all it refuses to start. Without a key nothing is signed or checked (the replica
says so once at start).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from raylane.errors import ConfigError, ModelError

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "Approver",
    "NotApproved",
    "approval_tag",
    "approved_record",
    "approver",
    "last_approved",
    "promotion_key",
    "record_tag",
    "sign",
    "verify",
]

ENV_KEY = "RAYLANE_PROMOTION_KEY"
ENV_KEY_FILE = "RAYLANE_PROMOTION_KEY_FILE"


class NotApproved(ModelError):
    """The version an alias names carries no valid approval: refused, never served."""

    default_stage = "registry"


def promotion_key() -> bytes | None:
    """The promotion key from the environment (or its file); None when neither is set."""
    raw = os.environ.get(ENV_KEY, "")
    path = os.environ.get(ENV_KEY_FILE, "")
    if raw and path:
        raise ConfigError(f"set one of {ENV_KEY} and {ENV_KEY_FILE}, not both", stage="config")
    if path:
        try:
            raw = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"{ENV_KEY_FILE}={path} cannot be read ({e.strerror or e}); fix the path",
                stage="config",
            ) from e
    if not raw:
        return None
    if len(raw) < 16:
        raise ConfigError(
            f"the promotion key ({ENV_KEY_FILE if path else ENV_KEY}) has {len(raw)} "
            "characters; use at least 16 (e.g. `openssl rand -hex 32`)",
            stage="config",
        )
    return raw.encode()


def approval_tag(alias: str) -> str:
    """The model version tag holding the approval for `alias`."""
    return f"raylane.approval.{alias}"


def record_tag(alias: str) -> str:
    """The registered-model tag recording the last version approved for `alias`."""
    return f"raylane.approved.{alias}"


def approved_record(key: bytes, name: str, alias: str, version: str | int) -> str:
    """The value of :func:`record_tag`: the version and its signature, as JSON."""
    return json.dumps(
        {"version": str(version), "sig": sign(key, name, alias, version)}, separators=(",", ":")
    )


def last_approved(key: bytes, name: str, alias: str, model_tags: Mapping[str, str]) -> str | None:
    """The version the model's approval record names for `alias`, if its signature verifies."""
    raw = model_tags.get(record_tag(alias), "")
    try:
        rec = json.loads(raw) if raw else None
        version, sig = str(rec["version"]), str(rec["sig"])  # type: ignore[index]
    except (ValueError, TypeError, KeyError):
        return None
    return version if hmac.compare_digest(sig, sign(key, name, alias, version)) else None


def sign(key: bytes, name: str, alias: str, version: str | int) -> str:
    """HMAC-SHA256 (hex) over the model name, the alias and the version."""
    msg = json.dumps([name, alias, str(version)], separators=(",", ":")).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify(key: bytes, name: str, alias: str, version: str | int, tags: Mapping[str, str]) -> None:
    """Raise :class:`NotApproved` unless `tags` (the version's) approve `version` for `alias`."""
    found = tags.get(approval_tag(alias), "")
    if not hmac.compare_digest(found, sign(key, name, alias, version)):
        why = "no approval tag" if not found else "an approval tag that does not verify"
        raise NotApproved(
            f"{name} v{version} has {why} for @{alias}: the alias was moved outside "
            f"`raylane promote` (or `raylane shadow set` for a shadow's alias); move it with "
            f"those or move @{alias} back"
        )


class Approver:
    """The checks a replica runs for `alias`: a version's approval, and the last approved one."""

    def __init__(
        self,
        key: bytes,
        name: str,
        alias: str,
        tags_of: Callable[[str], Mapping[str, str]],
        model_tags: Callable[[], Mapping[str, str]],
    ) -> None:
        self._key, self.name, self.alias = key, name, alias
        self._tags_of, self._model_tags = tags_of, model_tags

    def __call__(self, version: str) -> None:
        """Raise :class:`NotApproved` unless `version`'s tags approve it for the alias."""
        verify(self._key, self.name, self.alias, version, self._tags_of(version))

    def fallback(self) -> str | None:
        """The last version approved for the alias (checked against its own tag), or None."""
        version = last_approved(self._key, self.name, self.alias, self._model_tags())
        if version is None:
            return None
        try:
            self(version)
        except NotApproved:
            return None
        return version


def approver(
    name: str,
    alias: str,
    tags_of: Callable[[str], Mapping[str, str]],
    model_tags: Callable[[], Mapping[str, str]] = dict,
) -> Approver | None:
    """The checks a replica runs on the versions `alias` names (None without a key)."""
    key = promotion_key()
    if key is None:
        return None
    return Approver(key, name, alias, tags_of, model_tags)
