"""Credentials out of messages: URLs are masked before they reach an error or a log line.

MLflow, Redis, Kafka and schema-registry URLs may carry ``user:password@``; every message
that names one passes it through :func:`mask_url` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "has_credentials", "mask_url", "mask_urls"]

MASK = "***"

# scheme://userinfo@ inside free text (several URLs, or a URL inside a message)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s]+)@")


def has_credentials(url: str) -> bool:
    """True when `url` carries a password (``scheme://user:password@host``) or a bare token."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return parts.password is not None or (parts.username is not None and "@" in parts.netloc)


def mask_url(url: str) -> str:
    """`url` with its password (or a user-only token) replaced by ``***``; the user name stays.

    ``redis://:s3cret@redis:6379/0`` -> ``redis://:***@redis:6379/0``;
    ``https://user:pw@mlflow`` -> ``https://user:***@mlflow``; URLs without credentials
    and strings that are no URL come back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_urls(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    # a user-only userinfo (https://token@host) is a secret too
    masked = f"{user}:{MASK}" if sep else MASK
    return urlunsplit(parts._replace(netloc=f"{masked}@{hostport}"))


def mask_urls(text: str) -> str:
    """Every ``scheme://user:password@`` inside free text (an exception message) masked."""

    def _sub(m: re.Match[str]) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user + ':' + MASK if sep else MASK}@"

    return _USERINFO.sub(_sub, text)
