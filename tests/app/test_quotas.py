"""Quotas per API key (QUIRE_MAX_ACTIVE_JOBS_PER_KEY, QUIRE_MAX_QUEUED_FILES_PER_KEY): a
submission past one answers 429 in the one error shape with Retry-After, on each way to submit,
on both backends; a refused multipart body is never stored; two submissions racing for the last
slot admit exactly one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.api import jobs as job_routes
from app.config import get_settings
from app.db import session_scope
from app.main import create_app
from app.models import File, FileStatus, Job, JobStatus, utcnow
from app.services import quotas, submission
from app.storage import ObjectStore
from app.zipinput import DocxEntry
from tests.app.helpers import ZIP, assert_error, finish, offer, put, stored_keys
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip

ALICE, BOB = "alice-quota-key-0123", "bob-quota-key-4567"
PATHS = ["zip", "files", "direct"]


def documents(count: int) -> dict[str, bytes]:
    return {f"d{index}.docx": make_docx(f"Document {index}") for index in range(count)}


def send(
    client: TestClient, path: str, count: int = 1, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Submit ``count`` documents one of the three ways: a zip, DOCX parts, a direct upload."""
    entries = documents(count)
    if path == "zip":
        return client.post(
            "/api/v1/jobs", files={"file": ("batch.zip", make_zip(entries), ZIP)}, headers=headers
        )
    if path == "files":
        parts = [
            ("files", (name, data, "application/octet-stream")) for name, data in entries.items()
        ]
        return client.post("/api/v1/jobs", files=parts, headers=headers)
    upload = offer(client) if headers is None else _offer_with(client, headers)
    uploaded = put(client, str(upload["url"]), make_zip(entries), {"Content-Type": ZIP})
    assert uploaded.status_code == 200, uploaded.text
    return client.post("/api/v1/jobs", json={"upload_id": upload["upload_id"]}, headers=headers)


def _offer_with(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/uploads", headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def assert_quota_refusal(response: httpx.Response, fragment: str) -> int:
    """The 429 in the one error shape; returns its Retry-After."""
    assert_error(response, 429, fragment)
    assert response.json()["error"]["code"] == "quota_exceeded"
    wait = int(response.headers["retry-after"])
    assert quotas.MIN_WAIT <= wait <= quotas.MAX_WAIT
    assert f"try again in about {wait} s" in response.json()["error"]["message"]
    return wait


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the quotas for the requests that follow (the API reads its settings per request)."""

    def apply(jobs: int | None = None, files: int | None = None) -> None:
        for name, value in (
            ("QUIRE_MAX_ACTIVE_JOBS_PER_KEY", jobs),
            ("QUIRE_MAX_QUEUED_FILES_PER_KEY", files),
        ):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()

    return apply


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The multipart bodies the API started streaming into the store (their job ids' keys)."""
    calls: list[str] = []
    receive = job_routes.receive_upload

    async def recorded(request: Any, store: ObjectStore, key: str, *args: Any, **kw: Any) -> Any:
        calls.append(key)
        return await receive(request, store, key, *args, **kw)

    monkeypatch.setattr(job_routes, "receive_upload", recorded)
    return calls


@pytest.mark.parametrize("path", PATHS)
def test_the_active_jobs_quota_answers_429_on_each_path_until_a_job_ends(
    client: TestClient,
    sent: SentTasks,
    limit: Callable[..., None],
    received: list[str],
    path: str,
) -> None:
    limit(jobs=2)
    first, second = accepted(send(client, "zip")), accepted(send(client, "zip"))
    uploads_before = sorted(stored_keys("uploads/"))
    bodies_before = len(received)

    refused = send(client, path)
    assert_quota_refusal(refused, "Quota reached: 2 active jobs of 2 allowed on this server")
    assert int(refused.headers["retry-after"]) == quotas.UNKNOWN_WAIT  # nothing finished yet
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
    if path == "direct":
        # The client's upload stays: the same request may be sent again later.
        assert len(stored_keys("uploads/")) == len(uploads_before) + 1
    else:
        # Refused before the body was read into the store: nothing of it was stored.
        assert len(received) == bodies_before
        assert sorted(stored_keys("uploads/")) == uploads_before

    finish(first, sent)  # one job ends: its slot is free
    assert client.get(f"/api/v1/jobs/{first}").json()["status"] == "COMPLETED"
    third = accepted(send(client, path))
    assert_quota_refusal(send(client, "zip"), "2 active jobs of 2")
    assert client.post(f"/api/v1/jobs/{second}/cancel").status_code == 200  # cancelled: ended
    assert accepted(send(client, "zip")) not in (first, second, third)


@pytest.mark.parametrize("path", PATHS)
def test_the_queued_files_quota_counts_unfinished_files_of_active_jobs(
    client: TestClient,
    sent: SentTasks,
    limit: Callable[..., None],
    received: list[str],
    path: str,
) -> None:
    limit(files=5)
    first = accepted(send(client, "zip", count=3))
    uploads_before = sorted(stored_keys("uploads/"))

    refused = send(client, path, count=3)
    assert_quota_refusal(
        refused,
        "Quota reached: 3 files waiting or converting of 5 allowed on this server, no room for "
        "this job's 3 files. It fits once 1 of them has finished",
    )
    if path != "direct":
        # The file count is known only once the body is read: it was stored, then removed.
        assert sorted(stored_keys("uploads/")) == uploads_before
    second = accepted(send(client, path, count=2))  # under the limit: 3 + 2 = 5

    # Full: refused before the body is read, whatever the job's size.
    bodies_before = len(received)
    assert_quota_refusal(send(client, "zip"), "5 files waiting or converting of 5")
    assert len(received) == bodies_before

    finish(first, sent)  # its 3 files are finished: they count no more
    assert accepted(send(client, path, count=3)) not in (first, second)


def test_a_job_larger_than_the_files_quota_is_too_large_not_told_to_wait(
    client: TestClient, limit: Callable[..., None]
) -> None:
    limit(files=2)
    response = send(client, "zip", count=3)
    assert_error(response, 413, "This job has 3 files, more than the 2 files that may wait")
    assert "retry-after" not in response.headers
    assert stored_keys("uploads/") == []


def test_retry_after_comes_from_the_keys_recent_rate(
    client: TestClient, limit: Callable[..., None]
) -> None:
    limit(jobs=1)
    job_id = accepted(send(client, "zip", count=40))
    # 30 of its files finished within the last minute: 0.5 files/s, so the 10 left take 20 s.
    finished = utcnow() - timedelta(seconds=5)
    with session_scope() as session:
        ids = session.scalars(select(File.id).where(File.job_id == job_id).limit(30)).all()
        session.execute(
            update(File)
            .where(File.id.in_(ids))
            .values(status=FileStatus.COMPLETED, finished_at=finished, touched_at=finished)
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.IN_PROGRESS, finished_files=30)
        )
    assert assert_quota_refusal(send(client, "zip"), "1 active job of 1") == 20
    # Files finished before the window say nothing about now.
    with session_scope() as session:
        earlier = utcnow() - timedelta(minutes=5)
        session.execute(update(File).values(finished_at=earlier, touched_at=earlier))
    assert assert_quota_refusal(send(client, "zip"), "1 active job of 1") == quotas.UNKNOWN_WAIT


def test_a_repeated_request_with_its_idempotency_key_is_answered_at_the_quota(
    client: TestClient, limit: Callable[..., None]
) -> None:
    limit(jobs=1)
    body = make_zip(documents(1))
    headers = {"Idempotency-Key": "order-1"}

    def post() -> httpx.Response:
        files = {"file": ("batch.zip", body, ZIP)}
        return client.post("/api/v1/jobs", files=files, headers=headers)

    job_id = accepted(post())
    again = post()  # the answer to the first was lost: the client sends it again
    assert accepted(again) == job_id and again.headers["idempotent-replayed"] == "true"
    headers = {"Idempotency-Key": "order-2"}
    assert_quota_refusal(post(), "1 active job of 1")


@pytest.fixture
def keyed(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("QUIRE_API_KEYS", f"{ALICE},{BOB}")
    reset_caches()
    with TestClient(create_app()) as test_client:
        yield test_client


def test_with_api_keys_each_key_has_its_own_quota(
    keyed: TestClient, limit: Callable[..., None]
) -> None:
    limit(jobs=1)
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    accepted(send(keyed, "zip", headers=alice))
    assert_quota_refusal(
        send(keyed, "direct", headers=alice), "1 active job of 1 allowed per API key"
    )
    accepted(send(keyed, "files", headers=bob))  # Bob's slot is his own
    assert_quota_refusal(send(keyed, "zip", headers=bob), "per API key")


@pytest.mark.parametrize("quota", ["jobs", "files"])
def test_concurrent_submissions_for_the_last_slot_admit_exactly_one(
    client: TestClient,
    limit: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    quota: str,
) -> None:
    limit(jobs=2) if quota == "jobs" else limit(files=3)
    accepted(send(client, "zip", count=2))  # one slot (one file) left
    racers = 4
    # Every request has passed the early check and listed its zip before any of them decides:
    # the race the lock in quotas.admit must settle.
    all_listed = threading.Barrier(racers, timeout=60)
    listing = submission._list_entries

    def listed_together(store: ObjectStore, key: str, max_files: int) -> list[DocxEntry]:
        entries = listing(store, key, max_files)
        all_listed.wait()
        return entries

    monkeypatch.setattr(submission, "_list_entries", listed_together)
    answers: list[httpx.Response] = []

    def race() -> None:
        answers.append(send(client, "zip"))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(response.status_code for response in answers)
    assert statuses == [202] + [429] * (racers - 1), [r.text for r in answers]
    for response in answers:
        if response.status_code == 429:
            assert_quota_refusal(response, "Quota reached")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
    assert len(stored_keys("uploads/")) == 2  # the refused racers' uploads were removed


def test_the_openapi_document_lists_429_with_retry_after_for_submitting(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    refusal = document["paths"]["/api/v1/jobs"]["post"]["responses"]["429"]
    assert "Retry-After" in refusal["headers"]
