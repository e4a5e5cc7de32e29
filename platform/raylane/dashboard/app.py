"""The dashboard's web app: four pages, their JSON, the static assets and the drift reports.

A FastAPI app (FastAPI and uvicorn come with Ray Serve) whose pages are one HTML shell each
plus ``dashboard.js``, which fetches ``api/<page>`` every few seconds and draws it with
Plotly. ``plotly.min.js`` is served from the installed ``plotly`` package, so nothing is
loaded from a CDN (closed networks, this machine). With a token, every request must carry
it: ``Authorization: Bearer <token>``, or ``?token=<token>`` once (it is then kept in an
HttpOnly cookie for the page's own requests).
"""

from __future__ import annotations

import hmac
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from raylane.dashboard.collect import DashboardData

__all__ = ["PAGES", "TOKEN_COOKIE", "create_app", "plotly_js"]

#: page path -> title, in the order of the navigation bar
PAGES = {
    "shadow": "Shadow vs primary",
    "pipeline": "Pipeline",
    "drift": "Drift",
    "actions": "Actions and models",
}
TOKEN_COOKIE = "raylane_dashboard_token"

_STATIC = resources.files("raylane.dashboard") / "static"
#: the dashboard's own pages may only load what it serves itself
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package (its package data)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall plotly (`make setup`)")
    return path


def _authorized(request: Request, token: str) -> bool:
    given = [
        request.headers.get("authorization", "").removeprefix("Bearer ").strip(),
        request.cookies.get(TOKEN_COOKIE, ""),
        request.query_params.get("token", ""),
    ]
    return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)


def create_app(data: DashboardData, *, token: str | None = None, refresh_s: float = 5.0) -> FastAPI:
    """The dashboard of `data`'s pipeline; `token` required on every request when given."""
    app = FastAPI(title=f"raylane dashboard: {data.cfg.name}", docs_url=None, redoc_url=None)
    app.openapi_url = None  # no schema endpoint: nothing to browse but the pages
    shell = (_STATIC / "page.html").read_text()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Response:
        if token is not None and not _authorized(request, token):
            return Response(
                "this dashboard needs its token: open it with ?token=<token> or send "
                "'Authorization: Bearer <token>'",
                status_code=401,
                media_type="text/plain",
            )
        response: Response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=False)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("shadow")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "pipeline": data.cfg.name}

    def page(name: str) -> HTMLResponse:
        nav = "".join(
            f'<a href="{p}"{" class=active" if p == name else ""}>{t}</a>' for p, t in PAGES.items()
        )
        html = shell.format(
            title=PAGES[name], pipeline=data.cfg.name, page=name, nav=nav, refresh_s=refresh_s
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": _CSP})

    def api(name: str) -> JSONResponse:
        return JSONResponse(getattr(data, name)(), headers={"Cache-Control": "no-store"})

    for name in PAGES:
        # sync handlers: FastAPI runs them in its thread pool (Redis and MLflow block)
        app.add_api_route(f"/{name}", lambda n=name: page(n), include_in_schema=False)
        app.add_api_route(f"/api/{name}", lambda n=name: api(n), include_in_schema=False)

    @app.get("/static/{asset}", include_in_schema=False)
    def static(asset: str) -> Response:
        if asset == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript")
        if asset in ("dashboard.js", "dashboard.css"):
            media = "text/javascript" if asset.endswith(".js") else "text/css"
            return Response((_STATIC / asset).read_text(), media_type=media)
        raise HTTPException(404)

    @app.get("/reports/{name}", include_in_schema=False)
    def report(name: str) -> FileResponse:
        path = data.report_path(name)
        if path is None:
            raise HTTPException(404, f"no drift report {name} (old reports are pruned)")
        return FileResponse(path, media_type="text/html")

    return app
