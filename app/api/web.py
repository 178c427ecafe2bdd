"""The web page: ``/`` serves it, ``/static/{name}`` its script and style sheet.

Plain files from ``app/web/``, no build step. Only the files listed here are served, so no
request path can reach anything else on disk. The routes stay out of the OpenAPI document:
they are a client of the API, not part of it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
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

router = APIRouter(include_in_schema=False)


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
