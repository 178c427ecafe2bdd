"""The HTTP API in-process (TestClient), on both backends; the broker is captured."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.db import get_engine, session_scope
from app.models import FileStatus, JobStatus
from app.storage import get_store, result_key, upload_key
from tests.app.helpers import ZIP, assert_error, finish, post_zip, stored_keys
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip


def test_submit_answers_202_and_queues_after_commit(client: TestClient, sent: SentTasks) -> None:
    response = post_zip(client, make_zip({"a.docx": make_docx("a"), "d/b.docx": make_docx("b")}))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["file_count"] == 2 and body["status"] == "PENDING"
    assert response.headers["location"].endswith(f"/api/v1/jobs/{body['job_id']}")
    assert sent.ingests == [body["job_id"]]
    assert get_store().exists(upload_key(body["job_id"]))

    status = client.get(f"/api/v1/jobs/{body['job_id']}").json()
    assert status["status"] == "PENDING" and status["download_url"] is None
    assert [f["filename"] for f in status["files"]] == ["a.docx", "d/b.docx"]
    assert status["progress"] == {
        "total": 2,
        "pending": 2,
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "percent": 0.0,
    }
    assert status["options"] == {
        "pdf_a": None,
        "tagged_pdf": False,
        "strict_fonts": False,
        "merge": False,
        "merge_failure_page": True,
    }


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"definitely not a zip", 400, "not a readable zip"),
        (b"", 400, "not a readable zip"),
        (make_zip({}), 400, "empty"),
        (make_zip({"readme.txt": b"hi", "__MACOSX/._a.docx": b"x"}), 400, "no .docx"),
    ],
)
def test_bad_uploads_get_400_and_leave_nothing(
    client: TestClient, sent: SentTasks, data: bytes, status: int, fragment: str
) -> None:
    assert_error(post_zip(client, data), status, fragment)
    assert sent.ingests == []
    assert stored_keys("uploads/") == []


def test_missing_file_field_is_400(client: TestClient) -> None:
    assert_error(
        post_zip(client, make_zip({"a.docx": b"x"}), field="upload"),
        400,
        "no zip in the field 'file'",
    )


def test_not_multipart_is_415(client: TestClient) -> None:
    response = client.post(
        "/api/v1/jobs", content=make_zip({"a.docx": b"x"}), headers={"content-type": ZIP}
    )
    assert_error(response, 415, "multipart/form-data")


def test_too_many_files_is_413(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "max_files_per_job", 3)
    response = post_zip(client, make_zip({f"{i}.docx": b"x" for i in range(4)}))
    assert_error(response, 413, "limit is 3")


def test_oversized_body_is_413_with_and_without_content_length(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100_000)
    big = make_zip({"big.docx": b"\x00" * 10}) + b"\x00" * 300_000
    assert_error(post_zip(client, big), 413, "larger than the limit of 100000 bytes")

    boundary = "quireboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="x.zip"\r\nContent-Type: application/zip\r\n\r\n'
    ).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server must count for itself
        yield head
        for _ in range(40):
            yield b"\x00" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/v1/jobs",
        content=chunked(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413, "larger than the limit")
    assert sent.ingests == []


@pytest.mark.parametrize("job_id", ["0c6a2f43-8d3c-4a4e-9a0e-5b7c7c1f0a11", "not-a-uuid", "1"])
def test_unknown_or_malformed_job_is_404(client: TestClient, job_id: str) -> None:
    assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "No job with id")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/download"), 404, "No job with id")


def test_download_before_completion_is_409(client: TestClient) -> None:
    job_id = post_zip(client, make_zip({"a.docx": make_docx("a")})).json()["job_id"]
    assert_error(client.get(f"/api/v1/jobs/{job_id}/download"), 409, "not ready yet")


def test_completed_job_downloads_by_redirect_and_streamed(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = post_zip(client, make_zip({"a.docx": make_docx("a"), "b.docx": b"junk"})).json()[
        "job_id"
    ]
    finish(job_id, sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED"
    assert status["download_url"] == f"http://testserver/api/v1/jobs/{job_id}/download"
    assert status["progress"]["completed"] == 1 and status["progress"]["failed"] == 1
    failed = [f for f in status["files"] if f["status"] == "FAILED"]
    assert failed[0]["filename"] == "b.docx" and "not a zip package" in failed[0]["error_message"]

    redirect = client.get(f"/api/v1/jobs/{job_id}/download", follow_redirects=False)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    expected = b"".join(get_store().iter_chunks(result_key(job_id)))
    if location.startswith("http://testserver/"):  # the local store's signed URL
        fetched = client.get(location)
    else:  # a presigned S3 URL, fetched from the S3 server itself
        fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == ZIP
    assert "attachment" in fetched.headers["content-disposition"]
    assert fetched.content == expected

    streamed = client.get(f"/api/v1/jobs/{job_id}/download", params={"redirect": "false"})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == ZIP
    assert streamed.content == expected
    with zipfile.ZipFile(io.BytesIO(streamed.content)) as archive:
        assert archive.namelist() == ["a.pdf"]


def signed_download_url(client: TestClient, job_id: str) -> str:
    return str(
        client.get(f"/api/v1/jobs/{job_id}/download", follow_redirects=False).headers["location"]
    )


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)  # its own URLs
def test_signed_blob_urls_refuse_tampering(
    backend: Backend, client: TestClient, sent: SentTasks
) -> None:
    job_id = post_zip(client, make_zip({"a.docx": make_docx("a")})).json()["job_id"]
    finish(job_id, sent)
    location = signed_download_url(client, job_id)
    assert client.get(location).status_code == 200
    tampered = location.replace("result.zip", "input/x.docx")
    assert_error(client.get(tampered), 403, "invalid or has expired")
    expired = location.replace("expires=", "expires=1")
    assert_error(client.get(expired), 403, "invalid or has expired")


def test_status_query_count_does_not_grow_with_files(client: TestClient) -> None:
    small = post_zip(client, make_zip({f"{i}.docx": b"x" for i in range(3)})).json()["job_id"]
    large = post_zip(client, make_zip({f"d/{i}.docx": b"x" for i in range(10_000)})).json()[
        "job_id"
    ]
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        client.get(f"/api/v1/jobs/{small}")
        small_count = len(statements)
        statements.clear()
        body = client.get(f"/api/v1/jobs/{large}").json()
        large_count = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(body["files"]) == 10_000
    assert body["progress"]["total"] == 10_000
    assert small_count == large_count <= 3


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_readiness_reports_an_unreachable_broker(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import queue
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "broker_url", "redis://127.0.0.1:1/0")
    queue.get_sender.cache_clear()
    try:
        assert_error(client.get("/readyz"), 503, "broker down")
    finally:
        queue.get_sender.cache_clear()


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/download",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    upload = spec["paths"]["/api/v1/jobs"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "400", "413", "415"} <= set(upload["responses"])
    assert client.get("/docs").status_code == 200


def test_job_rows_are_written_in_one_transaction(client: TestClient) -> None:
    job_id = post_zip(client, make_zip({f"{i}.docx": b"x" for i in range(5)})).json()["job_id"]
    from app.jobs import get_job_view

    with session_scope() as session:
        view = get_job_view(session, job_id)
    assert view is not None
    assert view.job.status == JobStatus.PENDING and view.job.file_count == 5
    assert [f.status for f in view.files] == [FileStatus.PENDING] * 5


def test_a_store_failure_is_503_and_leaves_nothing_behind(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.storage import StoreError

    store = get_store()

    def unreachable(key: str) -> None:
        raise StoreError("connection refused")

    monkeypatch.setattr(store, "open_reader", unreachable)
    response = post_zip(client, make_zip({"a.docx": make_docx("a")}))
    assert_error(response, 503, "object store is unavailable")
    assert sent.ingests == []
    with session_scope() as session:
        from app.models import Job

        assert session.query(Job).count() == 0
    assert stored_keys("uploads/") == []


def test_low_disk_space_refuses_uploads_with_507(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "min_free_bytes", 10**18)  # more than any disk has
    response = post_zip(client, make_zip({"a.docx": make_docx("a")}))
    if backend.name == "sqlite-local":
        assert_error(response, 507, "low on disk space")
        assert sent.ingests == []
    else:  # the object store's own disk is not the API's to watch
        assert response.status_code == 202


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)
def test_signed_urls_expire(
    backend: Backend, client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from app.config import get_settings

    job_id = post_zip(client, make_zip({"a.docx": make_docx("a")})).json()["job_id"]
    finish(job_id, sent)
    location = signed_download_url(client, job_id)
    assert client.get(location).status_code == 200
    later = time.time() + get_settings().presigned_url_ttl + 1
    monkeypatch.setattr("app.storage.local.time.time", lambda: later)  # the clock moves on
    assert_error(client.get(location), 403, "invalid or has expired")


def parse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, data), comments skipped."""
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_events_of_a_finished_job_replay_every_file_then_end(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = post_zip(client, make_zip({"a.docx": make_docx("a"), "b.docx": b"junk"})).json()[
        "job_id"
    ]
    finish(job_id, sent)
    response = client.get(f"/api/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    files = {data["filename"]: data for name, data in events if name == "file"}
    assert files["a.docx"]["status"] == "COMPLETED"
    assert files["b.docx"]["status"] == "FAILED" and files["b.docx"]["error_message"]
    name, last = events[-1]
    assert name == "job" and last["status"] == "COMPLETED"
    assert last["download_url"].endswith(f"/api/v1/jobs/{job_id}/download")
    assert last["progress"]["percent"] == 100.0


def test_events_of_an_unknown_job_is_404(client: TestClient) -> None:
    assert_error(client.get("/api/v1/jobs/not-a-job/events"), 404, "No job with id")
