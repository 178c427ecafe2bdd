"""The web page: ``/`` serves it, ``/static/{name}`` its script and style sheet; and the API's
documentation, ``/docs`` (Swagger UI) and ``/redoc``, with their assets under ``/static/docs/``.

Plain files from ``app/web/``, no build step. Only the files listed here are served, so no
request path can reach anything else on disk. The routes stay out of the OpenAPI document:
they are a client of the API, not part of it.

The documentation's scripts come from the fastapi-offline package (a locked dependency), not
from a CDN: the page keeps an API key in this origin's storage, and a script from elsewhere,
changed there, could read it. Every page here runs under a Content-Security-Policy that allows
scripts from this origin only, and no inline script.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from app.api.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# The page loads nothing from elsewhere; it talks to this API only (uploads, events) and
# downloads archives by following the API's redirect, which a top-level navigation may do.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# The documentation pages: scripts from this origin only, as above. Swagger UI and ReDoc set
# element styles from their scripts, and ReDoc injects <style> elements and runs a blob: worker
# for its search, hence 'unsafe-inline' for styles (never for scripts) and worker-src blob:.
DOCS_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def _openapi_url(request: Request) -> str:
    return escape(request.scope.get("root_path", "") + (request.app.openapi_url or ""))


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = escape(request.scope.get("root_path", ""))
    html = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Quire API - Swagger UI</title>
  <link rel="icon" href="{root}/static/docs/favicon.png">
  <link rel="stylesheet" href="{root}/static/docs/swagger-ui.css">
  <script src="{root}/static/docs/swagger-ui-bundle.js" defer></script>
  <script src="{root}/static/docs.js" defer></script>
</head>
<body data-openapi-url="{_openapi_url(request)}">
  <div id="swagger-ui"></div>
</body>
</html>
"""
    return HTMLResponse(html, headers={**DOCS_SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = escape(request.scope.get("root_path", ""))
    html = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Quire API - ReDoc</title>
  <link rel="icon" href="{root}/static/docs/favicon.png">
  <script src="{root}/static/docs/redoc.standalone.js" defer></script>
</head>
<body>
  <redoc spec-url="{_openapi_url(request)}"></redoc>
</body>
</html>
"""
    return HTMLResponse(html, headers={**DOCS_SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/static/docs/{name}")
def docs_asset(name: str) -> FileResponse:
    media_type = DOCS_ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"No documentation asset named {name!r}.")
    # They change only with the locked package: a day's caching, revalidated after.
    return FileResponse(
        DOCS_ASSETS_DIR / name,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"},
    )


@router.get("/")
def page() -> FileResponse:
    return FileResponse(
        WEB_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    media_type = STATIC.get(name)
    if media_type is None:
        raise ApiError(404, f"No static file named {name!r}.")
    # no-cache: the browser revalidates (ETag), so a new release is never half-cached.
    return FileResponse(
        WEB_DIR / name,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
