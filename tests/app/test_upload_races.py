"""Direct uploads racing what else may touch them: the sweeper expiring them, and a second
request making a job of the same upload. Whatever the order, an upload becomes at most one job,
and a job's upload object is never removed under it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.jobs import JobSpec, create_job
from app.models import Job, Upload, utcnow
from app.services import submission
from app.storage import ObjectStore, get_store, upload_key
from app.zipinput import DocxEntry
from tests.app.helpers import ZIP, assert_error, finish, offer, put
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from workers import sweeper
from workers.sweeper import expire_uploads


def _uploaded(client: TestClient) -> str:
    """An upload with its zip PUT, expired long enough ago for the sweeper to take it."""
    upload = offer(client)
    data = make_zip({"a.docx": make_docx("a")})
    assert put(client, str(upload["url"]), data, {"Content-Type": ZIP}).status_code == 200
    upload_id = str(upload["upload_id"])
    with session_scope() as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=2 * get_settings().presigned_url_ttl)
    return upload_id


def test_upload_made_a_job_after_the_sweeper_listed_it_keeps_its_object(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = _uploaded(client)
    listed = sweeper.transitions.expired_uploads

    def listed_then_job_created(session: Session, grace: timedelta) -> list[str]:
        unused = listed(session, grace)
        # The client creates its job between the sweeper's listing and its removal.
        response = client.post("/api/v1/jobs", json={"upload_id": upload_id})
        assert response.status_code == 202, response.text
        return unused

    monkeypatch.setattr(sweeper.transitions, "expired_uploads", listed_then_job_created)
    expire_uploads(get_settings(), get_store())

    assert get_store().exists(upload_key(upload_id))  # the job's upload is still there
    finish(upload_id, sent)
    status = client.get(f"/api/v1/jobs/{upload_id}").json()
    assert status["status"] == "COMPLETED", status


def test_upload_expired_while_its_job_was_being_made_makes_no_job(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = _uploaded(client)
    listing = submission._list_entries

    def listed_then_swept(store: ObjectStore, key: str, max_files: int) -> list[DocxEntry]:
        entries = listing(store, key, max_files)
        # The sweeper removes the upload after the API read it, before the job is committed.
        assert expire_uploads(get_settings(), get_store()) == 1
        return entries

    monkeypatch.setattr(submission, "_list_entries", listed_then_swept)
    response = client.post("/api/v1/jobs", json={"upload_id": upload_id})
    assert_error(response, 404, "No upload")
    with session_scope() as session:
        assert session.get(Job, upload_id) is None  # no job whose upload is gone
    assert sent.ingests == []


def test_same_upload_made_a_job_twice_at_once_is_409_not_500(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = _uploaded(client)
    listing = submission._list_entries

    def listed_while_another_request_won(
        store: ObjectStore, key: str, max_files: int
    ) -> list[DocxEntry]:
        entries = listing(store, key, max_files)
        # A second request for the same upload commits its job first.
        with session_scope() as session:
            spec = JobSpec(job_id=upload_id, upload_bytes=1)
            create_job(session, spec, entries, consume_upload=True)
        return entries

    monkeypatch.setattr(submission, "_list_entries", listed_while_another_request_won)
    response = client.post("/api/v1/jobs", json={"upload_id": upload_id})
    assert_error(response, 409, "already made into job")
    assert get_store().exists(upload_key(upload_id))


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)  # the API's own PUT URLs
def test_a_put_after_the_upload_became_a_job_is_refused(
    backend: Backend, client: TestClient, sent: SentTasks
) -> None:
    upload = offer(client)
    url, upload_id = str(upload["url"]), str(upload["upload_id"])
    data = make_zip({"a.docx": make_docx("a")})
    assert put(client, url, data, {"Content-Type": ZIP}).status_code == 200
    assert client.post("/api/v1/jobs", json={"upload_id": upload_id}).status_code == 202

    # The link is still within its lifetime, but the object is the job's input now.
    other = make_zip({"b.docx": make_docx("b"), "c.docx": make_docx("c")})
    assert_error(put(client, url, other, {"Content-Type": ZIP}), 409, "already")
    with get_store().open_reader(upload_key(upload_id)) as stored:
        assert stored.read() == data
    finish(upload_id, sent)
    status = client.get(f"/api/v1/jobs/{upload_id}").json()
    assert status["status"] == "COMPLETED" and [f["filename"] for f in status["files"]] == [
        "a.docx"
    ]
