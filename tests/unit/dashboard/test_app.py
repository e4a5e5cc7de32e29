"""The dashboard's web app: pages, JSON, local assets, reports, and the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raylane.config import load_serve_config
from raylane.dashboard import check_bind
from raylane.dashboard.app import PAGES, TOKEN_COOKIE, create_app
from raylane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
REPORT = "fraud-v3-2026-11-28T061820.123000Z-0123abcd.html"


class FakeData:
    """Stands in for DashboardData (no Redis, MLflow or replicas in a unit test)."""

    def __init__(self, report_dir: Path) -> None:
        self.cfg = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1]
        self.report_dir = report_dir

    def shadow(self) -> dict[str, Any]:
        return {"page": "shadow"}

    def pipeline(self) -> dict[str, Any]:
        return {"page": "pipeline"}

    def drift(self) -> dict[str, Any]:
        return {"page": "drift"}

    def actions(self) -> dict[str, Any]:
        return {"page": "actions"}

    def report_path(self, name: str) -> Path | None:
        path = self.report_dir / name
        return path if name == REPORT and path.is_file() else None


@pytest.fixture
def data(tmp_path: Path) -> FakeData:
    (tmp_path / REPORT).write_text("<html>report</html>")
    return FakeData(tmp_path)


def test_pages_json_and_local_assets(data: FakeData) -> None:
    client = TestClient(create_app(data, refresh_s=3))  # type: ignore[arg-type]
    assert client.get("/", follow_redirects=False).headers["location"] == "shadow"
    for page, title in PAGES.items():
        r = client.get(f"/{page}")
        assert r.status_code == 200
        assert f"<title>raylane · {title} · fraud</title>" in r.text
        assert f'data-page="{page}"' in r.text and 'data-refresh-s="3' in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert client.get(f"/api/{page}").json() == {"page": page}
    html = client.get("/shadow").text
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000]
    assert "Plotly.react" in client.get("/static/dashboard.js").text
    assert client.get("/static/secrets.txt").status_code == 404


def test_reports_only_the_monitors_own_files(data: FakeData) -> None:
    client = TestClient(create_app(data))  # type: ignore[arg-type]
    assert client.get(f"/reports/{REPORT}").text == "<html>report</html>"
    assert client.get("/reports/other.html").status_code == 404
    assert client.get("/reports/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_a_token_guards_every_request(data: FakeData) -> None:
    client = TestClient(create_app(data, token="s3cret"))  # type: ignore[arg-type]
    for path in ("/shadow", "/api/shadow", "/static/dashboard.js", f"/reports/{REPORT}"):
        r = client.get(path)
        assert r.status_code == 401 and "token" in r.text, path
    assert client.get("/api/shadow", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/shadow", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # ?token= once, then the page's own requests carry the cookie
    r = client.get("/drift?token=s3cret")
    assert r.status_code == 200 and client.cookies.get(TOKEN_COOKIE) == "s3cret"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/api/drift").json() == {"page": "drift"}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "dashboard.example"])
def test_binding_elsewhere_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="RAYLANE_DASHBOARD_TOKEN"):
        check_bind(host, None)
    check_bind(host, "t0ken")
