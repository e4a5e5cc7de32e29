"""Signed promotions: a replica serves a version an alias names only if `raylane promote` (or
`rollback`) approved it.

Whoever can move an MLflow alias otherwise decides what scores payments. With a promotion key
set (``RAYLANE_PROMOTION_KEY`` or ``RAYLANE_PROMOTION_KEY_FILE``, the same secret for the
operators who promote and for the replicas), every alias move by raylane tags the version with
an HMAC-SHA256 over (model name, alias, version), ``raylane.approval.<alias>``; a replica
verifies it before it swaps to the version an alias moved to, and refuses (the old version
keeps serving; ``raylane_model_swaps_refused_total`` and a log line say why) a version whose
tag is missing or wrong: an alias moved in the MLflow UI or API, or a tag copied from another
version. Without a key nothing is signed or checked (the replica says so once at start).
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
    "NotApproved",
    "approval_tag",
    "approver",
    "promotion_key",
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
            f"`raylane promote`; promote it with `raylane promote` or move @{alias} back"
        )


def approver(
    name: str, alias: str, tags_of: Callable[[str], Mapping[str, str]]
) -> Callable[[str], None] | None:
    """The check a replica runs on the version `alias` moved to (None without a key):
    raises :class:`NotApproved` unless that version's tags (`tags_of(version)`) approve it."""
    key = promotion_key()
    if key is None:
        return None

    def approve(version: str) -> None:
        verify(key, name, alias, version, tags_of(version))

    return approve
