"""Who sees which job (API keys), the jobs list, and Idempotency-Key, on both backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import session_scope
from app.main import create_app
from app.models import Job, JobStatus
from tests.app.helpers import assert_error, finish, stored_keys
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"


@pytest.fixture
def keyed(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("QUIRE_API_KEYS", f"{ALICE}, {BOB}")
    reset_caches()
    with TestClient(create_app()) as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: TestClient, key: str | None = None, **headers: str) -> dict[str, object]:
    response = client.post(
        "/api/v1/jobs",
        files={"file": ("batch.zip", make_zip({"a.docx": make_docx("a")}), "application/zip")},
        headers={**(auth(key) if key else {}), **headers},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_api_keys_guard_every_route_and_scope_jobs(keyed: TestClient, sent: SentTasks) -> None:
    client = keyed
    routes = [
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/uploads"),
        ("GET", "/api/v1/jobs/00000000-0000-4000-8000-000000000000"),
        ("GET", "/api/v1/jobs/00000000-0000-4000-8000-000000000000/events"),
        ("GET", "/api/v1/jobs/00000000-0000-4000-8000-000000000000/download"),
    ]
    for method, path in routes:
        missing = client.request(method, path)
        assert_error(missing, 401, "Authorization: Bearer")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(client.request(method, path, headers=auth("wrong")), 403, "not accepted")
        assert_error(
            client.request(method, path, headers={"Authorization": f"Basic {ALICE}"}), 401, "Bearer"
        )
    # Health and the OpenAPI document stay open.
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200

    job_id = str(submit(client, ALICE)["job_id"])
    finish(job_id, sent)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth(ALICE)).status_code == 200
    for path in ("", "/events", "/download", "/files/x"):
        assert_error(client.get(f"/api/v1/jobs/{job_id}{path}", headers=auth(BOB)), 404, "No job")
    listed = client.get("/api/v1/jobs", headers=auth(BOB)).json()
    assert listed == {"jobs": [], "next_cursor": None}
    mine = client.get("/api/v1/jobs", headers=auth(ALICE)).json()
    assert [job["job_id"] for job in mine["jobs"]] == [job_id]
    with session_scope() as session:
        owner = session.get(Job, job_id).owner  # type: ignore[union-attr]
    assert owner and ALICE not in owner  # a digest, never the key


def test_jobs_list_pages_newest_first_and_filters(client: TestClient, sent: SentTasks) -> None:
    created = [str(submit(client)["job_id"]) for _ in range(5)]
    finish(created[1], sent)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]
    completed = client.get("/api/v1/jobs", params={"status": "COMPLETED"}).json()["jobs"]
    assert [job["job_id"] for job in completed] == [created[1]]
    assert completed[0]["finished_files"] == completed[0]["file_count"] == 1
    assert completed[0]["status_url"].endswith(f"/api/v1/jobs/{created[1]}")
    assert_error(client.get("/api/v1/jobs", params={"cursor": "garbage"}), 400, "cursor")
    assert_error(client.get("/api/v1/jobs", params={"status": "DONE"}), 422, "status")
    assert_error(client.get("/api/v1/jobs", params={"limit": 0}), 422, "limit")


def test_idempotency_key_returns_the_same_job(client: TestClient, sent: SentTasks) -> None:
    # One body sent twice: a zip built twice can differ in its entries' timestamps (two-second
    # resolution), and a different body under the same key is rightly refused.
    body = make_zip({"a.docx": make_docx("a")})
    first = client.post(
        "/api/v1/jobs",
        files={"file": ("b.zip", body, "application/zip")},
        headers={"Idempotency-Key": "order-42"},
    )
    again = client.post(
        "/api/v1/jobs",
        files={"file": ("b.zip", body, "application/zip")},
        headers={"Idempotency-Key": "order-42"},
    )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert sent.ingests == [first.json()["job_id"]]  # queued once
    assert stored_keys("uploads/") == [f"uploads/{first.json()['job_id']}/source.zip"]

    other_body = client.post(
        "/api/v1/jobs",
        files={"file": ("b.zip", make_zip({"z.docx": make_docx("z")}), "application/zip")},
        headers={"Idempotency-Key": "order-42"},
    )
    assert_error(other_body, 422, "different body")
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    # Another key, or none, makes a new job.
    assert submit(client, **{"Idempotency-Key": "order-43"})["job_id"] != first.json()["job_id"]
    assert submit(client)["job_id"] != first.json()["job_id"]
    long_key = client.post(
        "/api/v1/jobs",
        files={"file": ("b.zip", b"x", "application/zip")},
        headers={"Idempotency-Key": "k" * 300},
    )
    assert_error(long_key, 422, "Idempotency-Key")


def test_idempotency_key_holds_under_concurrent_requests(client: TestClient) -> None:
    body = make_zip({"a.docx": make_docx("a")})
    answers: list[dict[str, object]] = []

    def send() -> None:
        response = client.post(
            "/api/v1/jobs",
            files={"file": ("b.zip", body, "application/zip")},
            headers={"Idempotency-Key": "race"},
        )
        assert response.status_code == 202, response.text
        answers.append(response.json())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len({str(answer["job_id"]) for answer in answers}) == 1
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        assert session.scalars(select(Job.status)).one() == JobStatus.PENDING
    assert len(stored_keys("uploads/")) == 1  # the losers' uploads were removed
