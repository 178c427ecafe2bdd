"""Text a client sends that PostgreSQL cannot store (a NUL byte) or that is no URL at all is a
clear 4xx on both backends, never a 500 from the database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.app.test_api import ZIP, assert_error, client, post_zip
from tests.docx_factory import make_docx, make_zip

__all__ = ["client"]


def test_file_id_with_a_nul_byte_is_404(client: TestClient) -> None:
    job = post_zip(client, make_zip({"a.docx": make_docx("a")})).json()["job_id"]
    assert_error(client.get(f"/api/v1/jobs/{job}/files/%00abc"), 404, "has no file")
    assert_error(client.get(f"/api/v1/jobs/{job}/files/abc"), 404, "has no file")


@pytest.mark.parametrize(
    "url", ["http://a\x00b/hook", "http://exa mple.com/", "http://ex\tample.com/", "http://a/\r\n"]
)
def test_callback_url_with_control_characters_or_spaces_is_422(
    client: TestClient, url: str
) -> None:
    data = make_zip({"a.docx": make_docx("a")})
    response = client.post(
        "/api/v1/jobs", files={"file": ("b.zip", data, ZIP)}, data={"callback_url": url}
    )
    assert_error(response, 422, "callback_url")
    response = client.post(
        "/api/v1/jobs",
        json={"upload_id": "00000000-0000-4000-8000-000000000000", "callback_url": url},
    )
    assert_error(response, 422, "callback_url")
