"""The archive task against a cancel that lands after its last check: between the final
heartbeat and the moment the job would be marked COMPLETED (the store is the boundary)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from app.db import session_scope
from app.models import Job, JobStatus
from app.storage import ObjectWriter, get_store, result_key
from tests.app.helpers import post_zip
from tests.conftest import SentTasks
from tests.docx_factory import make_docx, make_zip
from workers import archive as archive_module
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import FakeConverter


def test_a_cancel_after_the_archive_was_stored_leaves_no_archive(
    client: TestClient,
    sent: SentTasks,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = post_zip(client, make_zip({"a.docx": make_docx("a"), "b.docx": make_docx("b")}))
    job_id = response.json()["job_id"]
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    for file_id in sent.conversions:
        convert_file(file_id, store, FakeConverter(), settings)
    assert sent.archives == [job_id]

    original = store.open_writer

    def open_writer(key: str, content_type: str) -> ObjectWriter:
        writer = original(key, content_type)
        commit = writer.commit

        def commit_then_cancel() -> None:
            commit()  # the zip is stored: every heartbeat passed
            assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200

        monkeypatch.setattr(writer, "commit", commit_then_cancel)
        return writer

    monkeypatch.setattr(store, "open_writer", open_writer)
    written: list[int] = []
    monkeypatch.setattr(
        archive_module.metrics, "archive_written", lambda size, _: written.append(size)
    )
    build_archive(job_id, store)

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.CANCELLED and job.result_bytes is None
    assert not store.exists(result_key(job_id))  # a cancelled job has no archive
    assert written == []  # and no archive is counted as written
    assert "job.completed" not in caplog.text


def test_a_duplicate_archive_task_keeps_the_archive_the_other_completed(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once delivery: two copies of one round's archive task may run at once."""
    response = post_zip(client, make_zip({"a.docx": make_docx("a")}))
    job_id = response.json()["job_id"]
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    for file_id in sent.conversions:
        convert_file(file_id, store, FakeConverter(), settings)

    original = store.open_writer
    duplicates: list[bool] = []

    def open_writer(key: str, content_type: str) -> ObjectWriter:
        writer = original(key, content_type)
        commit = writer.commit

        def commit_then_duplicate() -> None:
            commit()
            if not duplicates:  # the duplicate runs whole, and completes the job first
                duplicates.append(True)
                build_archive(job_id, store)

        monkeypatch.setattr(writer, "commit", commit_then_duplicate)
        return writer

    monkeypatch.setattr(store, "open_writer", open_writer)
    build_archive(job_id, store)

    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "COMPLETED"
    assert store.exists(result_key(job_id))
    assert client.get(f"/api/v1/jobs/{job_id}/download?redirect=false").status_code == 200
