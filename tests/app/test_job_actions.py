"""Retry, cancel and delete through the HTTP API, on both backends; the broker is captured.

Conversions run in-process with the fake converter here (the API is under test); the worker-level
tests with real LibreOffice are in tests/workers/test_job_actions_pipeline.py.
"""

from __future__ import annotations

import io
import threading
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app import transitions
from app.config import get_settings
from app.db import session_scope
from app.main import create_app
from app.models import (
    DeliveryStatus,
    File,
    FileStatus,
    Job,
    JobStatus,
    WebhookDelivery,
    new_id,
    utcnow,
)
from app.storage import StoreError, get_store, job_prefixes, output_key, result_key
from tests.app.helpers import assert_error, make_job, stored_keys, submit_documents
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import FakeConverter

NOT_A_JOB = "0c6a2f43-8d3c-4a4e-9a0e-5b7c7c1f0a11"


def run_tasks(sent: SentTasks) -> None:
    """Deliver every captured task, in order, until none is left (fake converter)."""
    settings, store, converter = get_settings(), get_store(), FakeConverter()
    while sent.ingests or sent.conversions or sent.archives:
        while sent.ingests:
            ingest_job(sent.ingests.pop(0), store, settings)
        while sent.conversions:
            convert_file(sent.conversions.pop(0), store, converter, settings)
        while sent.archives:
            build_archive(sent.archives.pop(0), store)


def files_of(job_id: str) -> dict[str, File]:
    with session_scope() as session:
        return {f.filename: f for f in session.scalars(select(File).where(File.job_id == job_id))}


def job_row(job_id: str) -> Job | None:
    with session_scope() as session:
        return session.get(Job, job_id)


def job_status(job_id: str) -> JobStatus:
    job = job_row(job_id)
    assert job is not None
    return job.status


def keys_of(job_id: str) -> list[str]:
    return sorted(key for prefix in job_prefixes(job_id) for key in stored_keys(prefix))


# -- retry ------------------------------------------------------------------------------------


def test_retry_of_a_completed_job_reconverts_only_its_failed_files(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a"), "b.docx": make_docx("b")})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    a_file, b_file = files_of(job_id)["a.docx"], files_of(job_id)["b.docx"]
    sent.conversions.clear()
    convert_file(a_file.id, store, FakeConverter(), settings)
    # b fails for a reason a retry may cure: its task gave up during an outage.
    with session_scope() as session:
        failed = transitions.fail_files(session, [b_file.id], "Processing failed after 9 tries")
        assert transitions.record_finished(session, job_id, failed)
    build_archive(job_id, store)
    assert job_status(job_id) == JobStatus.COMPLETED
    a_pdf = b"".join(store.iter_chunks(output_key(job_id, a_file.id)))

    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text
    status_url = f"http://testserver/api/v1/jobs/{job_id}"
    assert response.json() == {
        "job_id": job_id,
        "status": "IN_PROGRESS",
        "retried_files": 1,
        "status_url": status_url,
    }
    assert response.headers["location"] == status_url
    assert sent.conversions == [b_file.id]  # its input exists: converted again, not re-ingested
    assert sent.ingests == [] and sent.archives == []
    assert not get_store().exists(result_key(job_id))  # the old archive is gone
    job = job_row(job_id)
    assert job is not None
    assert (job.status, job.finished_files, job.archive_enqueued_at, job.completed_at) == (
        JobStatus.IN_PROGRESS,
        1,
        None,
        None,
    )
    assert job.result_bytes is None and job.error_message is None
    retried = files_of(job_id)["b.docx"]
    assert (retried.status, retried.error_message, retried.attempts) == (
        FileStatus.PENDING,
        None,
        0,
    )
    assert_error(client.get(f"/api/v1/jobs/{job_id}/download"), 409, "not ready")
    # While it runs again, a second retry is refused.
    assert_error(client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "only a job that has ended")

    run_tasks(sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED"
    assert [f["status"] for f in status["files"]] == ["COMPLETED", "COMPLETED"]
    assert status["progress"]["completed"] == 2 and status["progress"]["percent"] == 100.0
    # The completed file kept its PDF; the new archive holds both.
    assert b"".join(get_store().iter_chunks(output_key(job_id, a_file.id))) == a_pdf
    streamed = client.get(f"/api/v1/jobs/{job_id}/download", params={"redirect": "false"})
    assert streamed.status_code == 200
    with zipfile.ZipFile(io.BytesIO(streamed.content)) as archive:
        assert archive.namelist() == ["a.pdf", "b.pdf"]


def test_retry_is_refused_while_running_and_when_nothing_failed(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a")})
    assert_error(client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "is PENDING")
    run_tasks(sent)
    assert job_status(job_id) == JobStatus.COMPLETED
    assert_error(client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "nothing to retry")
    assert get_store().exists(result_key(job_id))  # a refused retry changes nothing
    assert sent.conversions == []


def test_a_broken_document_fails_again_on_retry(client: TestClient, sent: SentTasks) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a"), "junk.docx": b"plain text"})
    run_tasks(sent)
    first = files_of(job_id)["junk.docx"].error_message
    assert client.post(f"/api/v1/jobs/{job_id}/retry").json()["retried_files"] == 1
    run_tasks(sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED"
    junk = next(f for f in status["files"] if f["filename"] == "junk.docx")
    assert junk["status"] == "FAILED" and junk["error_message"] == first


def test_retry_of_a_job_that_failed_before_its_ingest_ingests_again(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a"), "b.docx": make_docx("b")})
    sent.ingests.clear()
    # The ingest gave up (say the store was down longer than its retries): the job FAILED with
    # its files, none of which has an input object.
    with session_scope() as session:
        transitions.fail_job(session, job_id, "The upload could not be unpacked. Store down.")
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "FAILED"

    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.json()["retried_files"] == 2
    assert sent.ingests == [job_id] and sent.conversions == []
    run_tasks(sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED" and status["error_message"] is None
    assert status["progress"]["completed"] == 2


def test_retry_of_a_job_whose_archive_failed_rebuilds_only_the_archive(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a")})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    convert_file(sent.conversions.pop(), store, FakeConverter(), settings)
    assert sent.archives == [job_id]
    sent.archives.clear()
    with session_scope() as session:  # the archive task gave up
        transitions.fail_job(session, job_id, "The result archive could not be built.")

    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.json()["retried_files"] == 0
    assert sent.archives == [job_id] and sent.conversions == []
    run_tasks(sent)
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "COMPLETED"


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_a_pending_job(client: TestClient, sent: SentTasks) -> None:
    job_id = submit_documents(client, {f"{i}.docx": make_docx(str(i)) for i in range(3)})
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "job_id": job_id,
        "status": "CANCELLED",
        "cancelled_files": 3,
        "status_url": f"http://testserver/api/v1/jobs/{job_id}",
    }
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "CANCELLED" and status["completed_at"] is not None
    assert {f["status"] for f in status["files"]} == {"CANCELLED"}
    assert {f["error_message"] for f in status["files"]} == {"Cancelled before it was converted."}
    # Every file reached its final state: the progress is complete, as in the live events.
    assert status["progress"]["cancelled"] == 3 and status["progress"]["percent"] == 100.0
    events = client.get(f"/api/v1/jobs/{job_id}/events").text
    assert '"cancelled": 3, "percent": 100.0' in events
    # The ingest that was queued before the cancel copies nothing and queues nothing.
    run_tasks(sent)
    assert stored_keys(f"jobs/{job_id}/") == []
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "CANCELLED"
    assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "already ended (CANCELLED)")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/download"), 409, "")


def test_cancel_mid_job_keeps_converted_files_and_builds_no_archive(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {f"{i}.docx": make_docx(str(i)) for i in range(4)})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    first = sent.conversions.pop(0)
    convert_file(first, store, FakeConverter(), settings)

    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["cancelled_files"] == 3
    run_tasks(sent)  # the queued conversions are dropped
    assert sent.archives == []
    files = files_of(job_id)
    assert [f.status for f in files.values()].count(FileStatus.COMPLETED) == 1
    assert [f.status for f in files.values()].count(FileStatus.CANCELLED) == 3
    assert sorted(stored_keys(f"jobs/{job_id}/output/")) == [output_key(job_id, first)]
    assert not get_store().exists(result_key(job_id))
    assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "already ended")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/download"), 409, "")

    # Retry converts the cancelled files and builds the archive of all four.
    assert client.post(f"/api/v1/jobs/{job_id}/retry").json()["retried_files"] == 3
    run_tasks(sent)
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "COMPLETED" and status["progress"]["completed"] == 4


def test_cancel_of_a_finished_job_is_409(client: TestClient, sent: SentTasks) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a")})
    run_tasks(sent)
    assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "already ended (COMPLETED)")
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "COMPLETED"


def test_cancel_schedules_the_jobs_webhook(
    client: TestClient, sent: SentTasks, webhooks_sent: list[str]
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a")})
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(callback_url="http://hooks.test/quire")
        )
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    with session_scope() as session:
        deliveries = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        ).all()
    assert [(d.event, d.url, d.status) for d in deliveries] == [
        ("job.cancelled", "http://hooks.test/quire", DeliveryStatus.PENDING)
    ]
    assert webhooks_sent == [deliveries[0].id]


# -- delete -----------------------------------------------------------------------------------


def test_delete_removes_rows_and_objects(
    client: TestClient, sent: SentTasks, webhooks_sent: list[str]
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a"), "b.docx": make_docx("b")})
    run_tasks(sent)
    with session_scope() as session:  # a callback delivery the job made
        session.add(
            WebhookDelivery(
                id=new_id(),
                job_id=job_id,
                url="http://hooks.test/",
                event="job.completed",
                status=DeliveryStatus.DELIVERED,
                attempts=1,
                created_at=utcnow(),
            )
        )
    assert len(keys_of(job_id)) == 6  # upload, 2 inputs, 2 PDFs, archive

    response = client.delete(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 204 and response.content == b""
    assert keys_of(job_id) == []
    with session_scope() as session:
        for model in (File, WebhookDelivery):
            count = session.scalar(
                select(func.count()).select_from(model).where(model.job_id == job_id)
            )
            assert count == 0, model
        assert session.get(Job, job_id) is None
    assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "No job with id")
    assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 404, "No job with id")
    assert webhooks_sent == []


def test_delete_of_a_running_job_cancels_it_first_and_late_tasks_cope(
    client: TestClient, sent: SentTasks
) -> None:
    job_id = submit_documents(client, {f"{i}.docx": make_docx(str(i)) for i in range(3)})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    convert_file(sent.conversions.pop(0), store, FakeConverter(), settings)
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204

    # Everything still queued for it arrives late: nothing fails, nothing is written.
    sent.ingests.append(job_id)
    sent.archives.append(job_id)
    run_tasks(sent)
    assert keys_of(job_id) == []
    assert job_row(job_id) is None


def test_unknown_job_is_404_for_every_action(client: TestClient) -> None:
    for raw in (NOT_A_JOB, "not-a-uuid"):
        assert_error(client.post(f"/api/v1/jobs/{raw}/retry"), 404, "No job with id")
        assert_error(client.post(f"/api/v1/jobs/{raw}/cancel"), 404, "No job with id")
        assert_error(client.delete(f"/api/v1/jobs/{raw}"), 404, "No job with id")


def test_another_keys_job_is_404(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIRE_API_KEYS", "key-one,key-two")
    reset_caches()
    one = {"Authorization": "Bearer key-one"}
    two = {"Authorization": "Bearer key-two"}
    with TestClient(create_app()) as client:
        response = client.post(
            "/api/v1/jobs",
            files={"file": ("batch.zip", make_zip({"a.docx": make_docx("a")}), "application/zip")},
            headers=one,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]

        for method, path in (
            ("POST", f"/api/v1/jobs/{job_id}/retry"),
            ("POST", f"/api/v1/jobs/{job_id}/cancel"),
            ("DELETE", f"/api/v1/jobs/{job_id}"),
        ):
            assert_error(client.request(method, path), 401, "needs an API key")
            assert_error(
                client.request(method, path, headers={"Authorization": "Bearer nope"}),
                403,
                "not accepted",
            )
            assert_error(client.request(method, path, headers=two), 404, "No job with id")
        # Untouched by the other key; its own key can act on it.
        assert client.get(f"/api/v1/jobs/{job_id}", headers=one).json()["status"] == "PENDING"
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=one).status_code == 200
        assert client.delete(f"/api/v1/jobs/{job_id}", headers=one).status_code == 204
    assert keys_of(job_id) == []


def test_openapi_documents_the_actions(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    retry = paths["/api/v1/jobs/{job_id}/retry"]["post"]
    cancel = paths["/api/v1/jobs/{job_id}/cancel"]["post"]
    delete = paths["/api/v1/jobs/{job_id}"]["delete"]
    for operation, success in ((retry, "202"), (cancel, "200"), (delete, "204")):
        assert operation["summary"] and operation["description"]
        assert {success, "401", "403", "404"} <= set(operation["responses"])
    assert {"409"} <= set(retry["responses"]) & set(cancel["responses"])
    assert retry["responses"]["202"]["content"]["application/json"]["example"]["retried_files"]
    assert cancel["responses"]["200"]["content"]["application/json"]["example"]["status"] == (
        "CANCELLED"
    )


def test_a_cancel_racing_finishing_workers_counts_each_file_once(backend: Backend) -> None:
    """Workers finish files while the cancel arrives: no deadlock, no file counted twice."""
    job_id, ids = make_job(16)
    barrier = threading.Barrier(len(ids) + 1)
    errors: list[BaseException] = []
    cancelled: list[int | None] = []

    def finish(file_id: str) -> None:
        try:
            barrier.wait()
            with session_scope() as session:
                if transitions.complete_file(session, file_id, output_bytes=1, crc32=0):
                    transitions.record_finished(session, job_id, 1)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def cancel() -> None:
        try:
            barrier.wait()
            with session_scope() as session:
                cancelled.append(transitions.cancel_job(session, job_id, "Cancelled."))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(file_id,)) for file_id in ids]
    threads.append(threading.Thread(target=cancel))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    statuses = [f.status for f in files_of(job_id).values()]
    completed = statuses.count(FileStatus.COMPLETED)
    assert completed + statuses.count(FileStatus.CANCELLED) == 16
    assert cancelled == [16 - completed]
    job = job_row(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert job.finished_files == completed

    with session_scope() as session:  # a retry counts afresh from the files that stay finished
        plan = transitions.retry_job(session, job_id)
    assert plan is not None and plan.files == 16 - completed
    job = job_row(job_id)
    assert job is not None and job.finished_files == completed


def test_delete_with_the_store_down_is_503_and_can_be_sent_again(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("a")})
    store = get_store()
    working = store.delete_prefix

    def unreachable(prefix: str) -> None:
        raise StoreError("connection refused")

    monkeypatch.setattr(store, "delete_prefix", unreachable)
    assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 503, "object store is unavailable")
    assert job_status(job_id) == JobStatus.CANCELLED  # still there, and its work stopped
    monkeypatch.setattr(store, "delete_prefix", working)
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert keys_of(job_id) == [] and job_row(job_id) is None
