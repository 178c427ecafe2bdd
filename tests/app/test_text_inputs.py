"""Text a client sends that PostgreSQL cannot store (a NUL byte) or that is no URL at all is a
clear 4xx on both backends, never a 500 from the database."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from tests.app.helpers import ZIP, assert_error, finish, post_zip
from tests.conftest import SentTasks
from tests.docx_factory import make_docx, make_zip


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


def test_a_pdf_streamed_through_the_api_keeps_any_file_name(
    client: TestClient, sent: SentTasks
) -> None:
    """?redirect=false: names from the zip (Greek, a quote, a newline) go in Content-Disposition
    encoded (RFC 6266 filename*), never raw: a 500 for non-Latin-1, a broken header else."""
    names = ["ελληνικά.docx", 'q"x.docx', "n\nl.docx"]
    response = post_zip(client, make_zip({name: make_docx(name) for name in names}))
    job = response.json()["job_id"]
    finish(job, sent)
    for file in client.get(f"/api/v1/jobs/{job}").json()["files"]:
        response = client.get(f"/api/v1/jobs/{job}/files/{file['file_id']}?redirect=false")
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"%PDF")
        disposition = response.headers["content-disposition"]
        assert disposition.isascii() and "\n" not in disposition
        assert disposition.startswith('attachment; filename="')
        encoded = disposition.split("filename*=UTF-8''", 1)[1]
        assert unquote(encoded) == posixpath.basename(file["output_name"])
