"""Direct uploads (``POST /api/v1/uploads`` → PUT to the store → job from ``upload_id``) and
several DOCX files in one multipart request, on both backends."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db import session_scope
from app.models import Upload
from app.storage import get_store, upload_key
from tests.app.helpers import ZIP, assert_error, finish, offer, put, stored_keys
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from workers.sweeper import expire_uploads


def fetch(client: TestClient, url: str) -> httpx.Response:
    return client.get(url) if url.startswith("http://testserver/") else httpx.get(url)


def test_direct_upload_becomes_a_job(client: TestClient, sent: SentTasks) -> None:
    data = make_zip({"a.docx": make_docx("a"), "sub/b.docx": make_docx("b")})
    upload = offer(client, size=len(data))
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": ZIP}
    assert int(str(upload["max_bytes"])) > len(data)
    assert put(client, str(upload["url"]), data, dict(upload["headers"])).status_code == 200  # type: ignore[arg-type]

    response = client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"], "pdf_a": "2b"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["job_id"] == upload["upload_id"] and body["file_count"] == 2
    assert response.headers["location"] == body["status_url"]
    assert sent.ingests == [body["job_id"]]
    status = client.get(body["status_url"]).json()
    assert status["options"] == {
        "pdf_a": "2b",
        "tagged_pdf": False,
        "strict_fonts": False,
        "merge": False,
        "merge_failure_page": True,
    }
    with session_scope() as session:
        assert session.get(Upload, body["job_id"]) is None  # consumed with the job

    finish(body["job_id"], sent)
    assert client.get(body["status_url"]).json()["status"] == "COMPLETED"
    # The same upload cannot make a second job.
    again = client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]})
    assert_error(again, 409, "already made into job")


def test_direct_upload_refusals(client: TestClient) -> None:
    unknown = client.post(
        "/api/v1/jobs", json={"upload_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert_error(unknown, 404, "No upload with id")
    assert_error(client.post("/api/v1/jobs", json={"upload_id": "nope"}), 422, "upload_id")
    assert_error(client.post("/api/v1/jobs", json={"upload": "x"}), 422, "upload_id")
    assert_error(
        client.post(
            "/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "Invalid request",
    )
    upload = offer(client)
    # Nothing PUT yet.
    assert_error(
        client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}), 409, "PUT the zip"
    )
    # Not a zip: 400, and the upload stays so the client may PUT a good one.
    put(client, str(upload["url"]), b"not a zip", {"Content-Type": ZIP})
    assert_error(client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}), 400, "zip")
    put(client, str(upload["url"]), make_zip({"a.docx": make_docx("a")}), {"Content-Type": ZIP})
    assert client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}).status_code == 202
    # A size over the limit is refused before anything is sent.
    assert_error(client.post("/api/v1/uploads", json={"size": 10**13}), 413, "limit")
    assert_error(client.post("/api/v1/uploads", json={"size": -1}), 422, "size")


def test_direct_upload_over_the_limit_is_413(
    client: TestClient, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import reset_caches

    monkeypatch.setenv("QUIRE_MAX_UPLOAD_BYTES", "2000")
    reset_caches()
    data = make_zip({f"{i}.docx": make_docx(str(i)) for i in range(3)})
    assert len(data) > 2000
    upload = offer(client)
    answer = put(client, str(upload["url"]), data, {"Content-Type": ZIP})
    if backend.name == "sqlite-local":
        # The API's own PUT endpoint enforces the signed limit while receiving.
        assert_error(answer, 413, "limit of 2000 bytes")
        put(client, str(upload["url"]), data[:1500], {"Content-Type": ZIP})
        assert_error(
            client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}), 400, "zip"
        )
    else:
        # S3 cannot bound a presigned PUT: the limit holds when the job is made, and the
        # oversized object is removed.
        assert answer.status_code == 200
        assert_error(
            client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}),
            413,
            "limit of 2000 bytes",
        )
        assert not get_store().exists(upload_key(str(upload["upload_id"])))


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)  # the API's own PUT URLs
def test_local_put_urls_refuse_tampering(backend: Backend, client: TestClient) -> None:
    upload = offer(client)
    url = str(upload["url"])
    assert_error(client.put(url.replace("max_bytes=", "max_bytes=9"), content=b"x"), 403, "invalid")
    other = url.replace(str(upload["upload_id"]), "00000000-0000-4000-8000-000000000000")
    assert_error(client.put(other, content=b"x"), 403, "invalid")
    # A download link cannot be used to upload, nor the reverse.
    assert_error(client.get(url), 422, "filename")


def test_unused_uploads_expire_with_their_object(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from app.config import get_settings
    from app.models import utcnow

    upload = offer(client)
    put(client, str(upload["url"]), make_zip({"a.docx": make_docx("a")}), {"Content-Type": ZIP})
    settings = get_settings()
    assert expire_uploads(settings, get_store()) == 0  # not expired yet
    with session_scope() as session:
        row = session.get(Upload, upload["upload_id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=2 * settings.presigned_url_ttl)
    assert expire_uploads(settings, get_store()) == 1
    assert stored_keys(f"uploads/{upload['upload_id']}/") == []
    assert_error(
        client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}), 404, "No upload"
    )


def post_files(client: TestClient, files: list[tuple[str, bytes]], **fields: str) -> httpx.Response:
    return client.post(
        "/api/v1/jobs",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        data=fields,
    )


def test_several_docx_files_in_one_request(client: TestClient, sent: SentTasks) -> None:
    response = post_files(
        client,
        [("a.docx", make_docx("a")), ("b.docx", b"junk"), ("a.docx", make_docx("again"))],
        tagged_pdf="true",
        callback_url="https://example.com/hook",
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.json()["file_count"] == 3
    # They were written into one zip, with the parts' bytes unchanged.
    stored = b"".join(get_store().iter_chunks(upload_key(job_id)))
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        assert archive.namelist() == ["a.docx", "b.docx", "a.docx"]
        assert archive.read("b.docx") == b"junk"
    finish(job_id, sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["options"] == {
        "pdf_a": None,
        "tagged_pdf": True,
        "strict_fonts": False,
        "merge": False,
        "merge_failure_page": True,
    }
    assert [(f["output_name"], f["status"]) for f in status["files"]] == [
        ("a.pdf", "COMPLETED"),
        ("b.pdf", "FAILED"),
        ("a (2).pdf", "COMPLETED"),
    ]


def test_several_files_refusals_leave_nothing(client: TestClient) -> None:
    assert_error(
        post_files(client, [("notes.txt", b"x")]),
        400,
        "not a .docx, .docm, .doc, .rtf or .odt file",
    )
    mixed = client.post(
        "/api/v1/jobs",
        files=[
            ("file", ("a.zip", make_zip({"a.docx": b"x"}), ZIP)),
            ("files", ("b.docx", b"x", ZIP)),
        ],
    )
    assert_error(mixed, 400, "either a zip")
    assert_error(post_files(client, [("a.docx", make_docx("a"))], pdf_a="4x"), 422, "pdf_a")
    assert_error(
        post_files(client, [("a.docx", make_docx("a"))], callback_url="ftp://x/y"),
        422,
        "http or https",
    )
    assert stored_keys("uploads/") == []


def test_per_file_downloads(client: TestClient, sent: SentTasks) -> None:
    response = post_files(client, [("a.docx", make_docx("a")), ("b.docx", b"junk")])
    job_id = response.json()["job_id"]
    finish(job_id, sent)
    files = {f["filename"]: f for f in client.get(f"/api/v1/jobs/{job_id}").json()["files"]}
    good, bad = files["a.docx"], files["b.docx"]
    assert bad["download_url"] is None
    fetched = fetch(client, good["download_url"])
    assert fetched.status_code == 200 and fetched.content.startswith(b"%PDF")
    assert fetched.headers["content-type"] == "application/pdf"

    path = f"/api/v1/jobs/{job_id}/files/{good['file_id']}"
    redirect = client.get(path, follow_redirects=False)
    assert redirect.status_code == 307
    assert fetch(client, redirect.headers["location"]).content == fetched.content
    streamed = client.get(path, params={"redirect": "false"})
    assert streamed.status_code == 200 and streamed.content == fetched.content
    assert 'filename="a.pdf"' in streamed.headers["content-disposition"]

    assert_error(client.get(f"/api/v1/jobs/{job_id}/files/{bad['file_id']}"), 409, "not a zip")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/files/nope"), 404, "no file with id")
