"""/docs and /redoc load nothing from another origin, run no inline script, and carry a
Content-Security-Policy that allows scripts from this origin only (issue 12): the web page
keeps an API key in this origin's storage, and a CDN's script could read it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app

WEB_DIR = Path(__file__).resolve().parents[2] / "app" / "web"


@pytest.fixture(scope="module")
def bare_client() -> Iterator[TestClient]:
    # The pages and their assets need no database, store or broker: no lifespan.
    yield TestClient(create_app())


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_documentation_pages_use_only_their_own_origin(
    bare_client: TestClient, path: str
) -> None:
    response = bare_client.get(path)
    assert response.status_code == 200
    html = response.text
    references = re.findall(r'(?:src|href|spec-url|data-openapi-url)="([^"]*)"', html)
    assert references, html
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
    assert "cdn" not in html.lower() and "http" not in html
    # Every script is a file: no inline code for the policy to have to allow.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(
        'src="' in attributes and not body.strip() for attributes, body in scripts
    )
    for reference in references:
        if reference.startswith("/static/"):
            asset = bare_client.get(reference)
            assert asset.status_code == 200, reference
            assert asset.headers["x-content-type-options"] == "nosniff"
    policy = csp_directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


def test_swagger_ui_is_served_from_the_package(bare_client: TestClient) -> None:
    bundle = bare_client.get("/static/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert bare_client.get("/static/docs/../config.py").status_code == 404
    assert bare_client.get("/static/docs/index.html").status_code == 404
    assert "/docs" not in bare_client.get("/openapi.json").json()["paths"]


def test_the_web_page_allows_only_its_own_scripts(bare_client: TestClient) -> None:
    response = bare_client.get("/")
    policy = csp_directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert "<script>" not in response.text


def test_the_web_page_keeps_the_key_for_the_session_only() -> None:
    script = (WEB_DIR / "app.js").read_text()
    assert "sessionStorage.setItem(KEY_STORAGE" in script
    assert "localStorage.setItem" not in script.replace("sessionStorage", "")
