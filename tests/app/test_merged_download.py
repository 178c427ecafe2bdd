"""The merged PDF through the API: the options merge and merge_failure_page (multipart and
JSON), merged_url in the status document, and GET /api/v1/jobs/{id}/merged (307, streamed,
409, 404), on both backends. The job runs in-process with the fake converter: the API is
under test here (tests/workers/test_merge.py has the PDF itself, on real LibreOffice)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from app.main import create_app
from app.storage import get_store, merged_key
from tests.app.helpers import ZIP, assert_error, finish, offer, put
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
PDF = "application/pdf"


def submit(client: TestClient, entries: dict[str, bytes], **fields: str) -> str:
    response = client.post(
        "/api/v1/jobs", files={"file": ("batch.zip", make_zip(entries), ZIP)}, data=fields
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def fetch(client: TestClient, url: str) -> httpx.Response:
    """A presigned URL: the API's own (local store) or the S3 server's."""
    return client.get(url) if url.startswith("http://testserver/") else httpx.get(url)


def test_a_merged_job_shows_merged_url_and_downloads_by_redirect_and_streamed(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit(client, {"a.docx": make_docx("a"), "b.docx": b"junk"}, merge="true")
    running = client.get(f"/api/v1/jobs/{job_id}").json()
    assert running["options"]["merge"] is True and running["options"]["merge_failure_page"]
    assert running["merged_url"] is None
    assert_error(client.get(f"/api/v1/jobs/{job_id}/merged"), 409, "not ready yet")

    finish(job_id, sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED"
    assert status["merged_url"] == f"http://testserver/api/v1/jobs/{job_id}/merged"
    expected = b"".join(get_store().iter_chunks(merged_key(job_id)))
    assert status["merged_bytes"] == len(expected)
    # a.docx's page, then the failure page naming b.docx.
    reader = PdfReader(io.BytesIO(expected))
    assert len(reader.pages) == 2 and "b.docx" in (reader.pages[1].extract_text() or "")

    redirect = client.get(status["merged_url"], follow_redirects=False)
    assert redirect.status_code == 307
    fetched = fetch(client, redirect.headers["location"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == PDF
    assert f"quire-{job_id}.pdf" in fetched.headers["content-disposition"]
    assert fetched.content == expected

    streamed = client.get(status["merged_url"], params={"redirect": "false"})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == PDF
    assert streamed.content == expected


def test_a_job_without_merge_answers_409_and_has_no_merged_url(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit(client, {"a.docx": make_docx("a")})
    finish(job_id, sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED"
    assert status["merged_url"] is None and status["options"]["merge"] is False
    assert_error(client.get(f"/api/v1/jobs/{job_id}/merged"), 409, "without merge=true")


def test_merge_failure_page_false_is_recorded(client: TestClient, sent: SentTasks) -> None:
    job_id = submit(
        client, {"a.docx": make_docx("a"), "b.docx": b"junk"}, merge="1", merge_failure_page="0"
    )
    options = client.get(f"/api/v1/jobs/{job_id}").json()["options"]
    assert options["merge"] is True and options["merge_failure_page"] is False
    finish(job_id, sent)
    merged = client.get(f"/api/v1/jobs/{job_id}/merged", params={"redirect": "false"})
    assert len(PdfReader(io.BytesIO(merged.content)).pages) == 1  # no failure page


@pytest.mark.parametrize("field", ["merge", "merge_failure_page"])
def test_a_bad_option_value_is_422(client: TestClient, sent: SentTasks, field: str) -> None:
    response = client.post(
        "/api/v1/jobs",
        files={"file": ("batch.zip", make_zip({"a.docx": make_docx("a")}), ZIP)},
        data={field: "perhaps"},
    )
    assert_error(response, 422, field)
    assert sent.ingests == []
    assert_error(client.post("/api/v1/jobs", json={"upload_id": "x", field: [1]}), 422, field)


def test_a_direct_upload_takes_merge_in_its_json_body(client: TestClient, sent: SentTasks) -> None:
    data = make_zip({"a.docx": make_docx("a")})
    upload = offer(client, size=len(data))
    headers = dict(upload["headers"])  # type: ignore[call-overload]
    assert put(client, str(upload["url"]), data, headers).status_code == 200
    response = client.post(
        "/api/v1/jobs",
        json={"upload_id": upload["upload_id"], "merge": True, "merge_failure_page": False},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    options = client.get(f"/api/v1/jobs/{job_id}").json()["options"]
    assert options["merge"] is True and options["merge_failure_page"] is False
    finish(job_id, sent)
    assert client.get(f"/api/v1/jobs/{job_id}").json()["merged_url"].endswith("/merged")


@pytest.fixture
def keyed_client(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The API with two API keys: each sees only its own jobs."""
    monkeypatch.setenv("QUIRE_API_KEYS", f"{ALICE}, {BOB}")
    reset_caches()
    with TestClient(create_app()) as test_client:
        yield test_client


def test_an_unknown_job_or_another_keys_job_is_404(
    keyed_client: TestClient, sent: SentTasks
) -> None:
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"Authorization": f"Bearer {BOB}"}
    response = keyed_client.post(
        "/api/v1/jobs",
        files={"file": ("batch.zip", make_zip({"a.docx": make_docx("a")}), ZIP)},
        data={"merge": "true"},
        headers=alice,
    )
    job_id = response.json()["job_id"]
    finish(job_id, sent)
    merged = f"/api/v1/jobs/{job_id}/merged"
    assert keyed_client.get(merged, headers=alice, follow_redirects=False).status_code == 307
    assert_error(keyed_client.get(merged, headers=bob), 404, "No job")
    unknown = "/api/v1/jobs/0c6a2f43-8d3c-4a4e-9a0e-5b7c7c1f0a11/merged"
    assert_error(keyed_client.get(unknown, headers=alice), 404, "No job")
