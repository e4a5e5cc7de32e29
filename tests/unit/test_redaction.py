"""Credentials in URLs are masked before they reach a message or a log line."""

from __future__ import annotations

import pytest

from raylane.redaction import has_credentials, mask_url, mask_urls


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://app:s3cret@redis.prod:6380/1", "rediss://app:***@redis.prod:6380/1"),
        ("https://ops:pa55@mlflow.internal/api", "https://ops:***@mlflow.internal/api"),
        ("https://tok3n@registry.example", "https://***@registry.example"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
        ("/work/.raylane", "/work/.raylane"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert has_credentials(url) == (url != masked)


def test_mask_urls_in_free_text() -> None:
    text = (
        "could not reach redis://:hunter2@r:6379/0 nor https://u:pw@mlflow:5000 "
        "(plain http://host:1 is fine)"
    )
    out = mask_urls(text)
    assert "hunter2" not in out and ":pw@" not in out
    assert "redis://:***@r:6379/0" in out and "https://u:***@mlflow:5000" in out
    assert "http://host:1" in out
