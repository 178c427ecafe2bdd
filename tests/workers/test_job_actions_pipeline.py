"""Retry, cancel and delete against the real pipeline: ingest, LibreOffice, archive, in-process.

The actions go through the HTTP API (TestClient); the broker is the one fake (``sent``), and the
test delivers what was queued, late where a real queue could be late. A cancel or delete that
arrives while a worker is busy is made to arrive then: the real converter runs the action just
before converting, and the real store runs it when the archive or the ingest touches it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app import transitions
from app.config import get_settings
from app.db import session_scope
from app.models import File, FileStatus, Job, JobStatus
from app.storage import get_store, job_prefixes, output_key, result_key
from tests.app.helpers import stored_keys, submit_documents
from tests.conftest import SentTasks
from tests.docx_factory import make_docx
from tests.pdf import pdf_pages
from tests.workers.helpers import age
from workers import ingest
from workers.archive import build_archive, queue_archive_after_commit
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import PLAIN_PDF, Converter, PdfOptions
from workers.libreoffice.uno import UnoConverter
from workers.sweeper import sweep


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


class Interrupted:
    """The real converter, with something that happens while it converts (once)."""

    def __init__(self, inner: Converter, during: Callable[[], None]) -> None:
        self.inner, self.during, self.restarts = inner, during, 0

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        self.during()
        self.inner.convert(source, target, timeout, options)

    def close(self) -> None:
        pass


def file_ids(job_id: str) -> dict[str, str]:
    with session_scope() as session:
        rows = session.execute(select(File.filename, File.id).where(File.job_id == job_id))
        return {name: file_id for name, file_id in rows}


def files_by_name(job_id: str) -> dict[str, File]:
    with session_scope() as session:
        return {f.filename: f for f in session.scalars(select(File).where(File.job_id == job_id))}


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


def run_queued(sent: SentTasks, converter: Converter) -> None:
    settings, store = get_settings(), get_store()
    while sent.ingests or sent.conversions or sent.archives:
        while sent.ingests:
            ingest_job(sent.ingests.pop(0), store, settings)
        while sent.conversions:
            convert_file(sent.conversions.pop(0), store, converter, settings)
        while sent.archives:
            build_archive(sent.archives.pop(0), store)


def result_members(job_id: str) -> dict[str, bytes]:
    data = b"".join(get_store().iter_chunks(result_key(job_id)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def give_up_on(job_id: str, file_id: str) -> bool:
    """What the conversion task does when it gives up after an outage outlasted its retries."""
    with session_scope() as session:
        failed = transitions.fail_files(
            session, [file_id], "Processing failed after 9 attempts: connection refused"
        )
        archive_due = transitions.record_finished(session, job_id, failed)
        if archive_due:
            queue_archive_after_commit(session, job_id)
    return archive_due


def job_keys(job_id: str) -> list[str]:
    return sorted(key for prefix in job_prefixes(job_id) for key in stored_keys(prefix))


def test_retry_converts_a_file_that_failed_for_a_passing_reason(
    client: TestClient, sent: SentTasks, converter: Converter
) -> None:
    job_id = submit_documents(
        client,
        {
            "a.docx": make_docx("Alpha text"),
            "b.docx": make_docx("Beta text"),
            "c.docx": make_docx("Gamma text"),
        },
    )
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    ids = file_ids(job_id)
    sent.conversions.remove(ids["b.docx"])  # its task gives up instead of converting
    run_queued(sent, converter)
    assert give_up_on(job_id, ids["b.docx"])  # the last file to finish claims the archive
    run_queued(sent, converter)
    assert job_row(job_id).status == JobStatus.COMPLETED
    assert sorted(result_members(job_id)) == ["a.pdf", "c.pdf"]

    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.json()["retried_files"] == 1
    assert sent.conversions == [ids["b.docx"]]
    run_queued(sent, converter)

    job = job_row(job_id)
    assert job.status == JobStatus.COMPLETED and job.finished_files == 3
    assert {f.status for f in files_by_name(job_id).values()} == {FileStatus.COMPLETED}
    members = result_members(job_id)
    assert sorted(members) == ["a.pdf", "b.pdf", "c.pdf"]
    assert "Beta text" in pdf_pages(members["b.pdf"])[0]
    assert "Alpha text" in pdf_pages(members["a.pdf"])[0]
    assert job.result_bytes == store.size(result_key(job_id))


def test_cancel_mid_job_drops_late_and_queued_work(
    client: TestClient, sent: SentTasks, converter: Converter
) -> None:
    names = [f"{i}.docx" for i in range(4)]
    job_id = submit_documents(client, {name: make_docx(f"Document {name}") for name in names})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    ids = file_ids(job_id)
    assert sent.conversions == [ids[name] for name in names]
    sent.conversions.clear()
    convert_file(ids["0.docx"], store, converter, settings)

    # 1.docx is being converted when the cancel arrives: its PDF is written but never recorded.
    def cancel() -> None:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["cancelled_files"] == 3

    convert_file(ids["1.docx"], store, Interrupted(converter, cancel), settings)
    # 2.docx and 3.docx were still queued: their messages arrive after the cancel.
    for name in ("2.docx", "3.docx"):
        convert_file(ids[name], store, converter, settings)

    files = files_by_name(job_id)
    assert files["0.docx"].status == FileStatus.COMPLETED
    for name in ("1.docx", "2.docx", "3.docx"):
        assert files[name].status == FileStatus.CANCELLED, name
        assert files[name].error_message == "Cancelled before it was converted."
    assert files["1.docx"].output_bytes is None  # the late completion was dropped
    assert files["2.docx"].attempts == 0  # never claimed
    job = job_row(job_id)
    assert job.status == JobStatus.CANCELLED and job.finished_files == 1
    assert job.archive_enqueued_at is None and sent.archives == []
    assert stored_keys(f"jobs/{job_id}/output/") == [output_key(job_id, ids["0.docx"])]
    assert not store.exists(result_key(job_id))

    # The converted file stays downloadable on its own.
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "CANCELLED"
    links = {f["filename"]: f.get("download_url") for f in status["files"]}
    assert links["0.docx"] and links["1.docx"] is None
    pdf = client.get(f"/api/v1/jobs/{job_id}/files/{ids['0.docx']}", params={"redirect": "false"})
    assert pdf.status_code == 200 and "Document 0.docx" in pdf_pages(pdf.content)[0]


def test_a_late_archive_of_an_earlier_round_cannot_complete_a_retried_job(
    client: TestClient, sent: SentTasks, converter: Converter
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("Alpha"), "b.docx": make_docx("Beta")})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    ids = file_ids(job_id)
    convert_file(ids["a.docx"], store, converter, settings)
    sent.conversions.clear()
    assert give_up_on(job_id, ids["b.docx"])
    round_one = job_row(job_id).archive_enqueued_at
    assert round_one is not None and sent.archives == [job_id]
    build_archive(job_id, store)  # round one ends: COMPLETED with a.pdf
    assert job_row(job_id).status == JobStatus.COMPLETED
    sent.archives.clear()

    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 202
    # A duplicate of round one's archive message arrives while b converts again: no effect.
    build_archive(job_id, store)
    job = job_row(job_id)
    assert job.status == JobStatus.IN_PROGRESS and job.archive_enqueued_at is None
    assert not store.exists(result_key(job_id))
    with session_scope() as session:  # nor can round one's claim finish the job
        assert not transitions.finish_job(session, job_id, result_bytes=1, claimed_at=round_one)
        assert not transitions.touch_archive(session, job_id, round_one)

    run_queued(sent, converter)
    job = job_row(job_id)
    assert job.status == JobStatus.COMPLETED
    assert job.archive_enqueued_at is not None and job.archive_enqueued_at != round_one
    assert sorted(result_members(job_id)) == ["a.pdf", "b.pdf"]


def _ready_for_archive(client: TestClient, sent: SentTasks, converter: Converter) -> str:
    job_id = submit_documents(client, {"a.docx": make_docx("Alpha"), "b.docx": make_docx("Beta")})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    while sent.conversions:
        convert_file(sent.conversions.pop(0), store, converter, settings)
    assert sent.archives == [job_id]
    sent.archives.clear()
    return job_id


def _during_archive(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run ``action`` when the archive starts reading the PDFs (the store is the boundary)."""
    store = get_store()
    original = store.iter_chunks
    done: list[bool] = []

    def iter_chunks(key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        if not done:
            done.append(True)
            action()
        yield from original(key, chunk_size)

    monkeypatch.setattr(store, "iter_chunks", iter_chunks)


def test_a_cancel_while_the_archive_is_written_leaves_no_archive(
    client: TestClient, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _ready_for_archive(client, sent, converter)
    _during_archive(
        monkeypatch, lambda: client.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
    )
    build_archive(job_id, get_store())  # no exception: the task ends quietly
    job = job_row(job_id)
    assert job.status == JobStatus.CANCELLED and job.result_bytes is None
    assert not get_store().exists(result_key(job_id))

    # A retry of the cancelled job builds the archive of both PDFs.
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.json()["retried_files"] == 0
    assert sent.archives == [job_id] and sent.conversions == []
    run_queued(sent, converter)
    assert job_row(job_id).status == JobStatus.COMPLETED
    assert sorted(result_members(job_id)) == ["a.pdf", "b.pdf"]


def test_a_delete_while_the_archive_is_written_leaves_nothing(
    client: TestClient, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _ready_for_archive(client, sent, converter)
    _during_archive(monkeypatch, lambda: client.delete(f"/api/v1/jobs/{job_id}").raise_for_status())
    build_archive(job_id, get_store())  # its PDFs vanish under it: no failure, nothing written
    assert job_keys(job_id) == []
    with session_scope() as session:
        assert session.get(Job, job_id) is None


def test_a_delete_while_a_file_converts_leaves_nothing(
    client: TestClient, sent: SentTasks, converter: Converter
) -> None:
    job_id = submit_documents(client, {"a.docx": make_docx("Alpha"), "b.docx": make_docx("Beta")})
    settings, store = get_settings(), get_store()
    ingest_job(sent.ingests.pop(), store, settings)
    first, second = sent.conversions
    sent.conversions.clear()

    def delete() -> None:
        assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204

    convert_file(first, store, Interrupted(converter, delete), settings)
    convert_file(second, store, converter, settings)  # queued before the delete, run after
    ingest_job(job_id, store, settings)  # a redelivered ingest
    build_archive(job_id, store)  # and a stray archive message
    assert job_keys(job_id) == []
    with session_scope() as session:
        assert session.scalars(select(File.id).where(File.job_id == job_id)).all() == []
        assert session.get(Job, job_id) is None


def _interrupt_ingest(
    monkeypatch: pytest.MonkeyPatch, after_writers: int, action: Callable[[], None]
) -> None:
    """Run ``action`` when the ingest opens its n-th input object (the store is the boundary);
    batches of 2, so the ingest reaches a commit soon after."""
    monkeypatch.setattr(ingest, "BATCH", 2)
    store = get_store()
    original = store.open_writer
    opened: list[str] = []

    def open_writer(key: str, content_type: str) -> Any:
        opened.append(key)
        if len(opened) == after_writers:
            action()
        return original(key, content_type)

    monkeypatch.setattr(store, "open_writer", open_writer)


def test_a_cancel_stops_the_ingest(
    client: TestClient, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"{i}.docx" for i in range(8)]
    job_id = submit_documents(client, {name: make_docx(name) for name in names})
    _interrupt_ingest(
        monkeypatch, 3, lambda: client.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
    )
    ingest_job(sent.ingests.pop(), get_store(), get_settings())
    ids = file_ids(job_id)
    # The first batch was queued before the cancel; the ingest stopped at its next commit.
    assert sent.conversions == [ids["0.docx"], ids["1.docx"]]
    assert len(stored_keys(f"jobs/{job_id}/input/")) <= 4
    run_queued(sent, converter)  # the queued conversions are dropped
    files = files_by_name(job_id)
    assert {f.status for f in files.values()} == {FileStatus.CANCELLED}
    assert all(
        f.input_bytes is None for name, f in files.items() if name not in ("0.docx", "1.docx")
    )
    assert job_row(job_id).status == JobStatus.CANCELLED
    assert stored_keys(f"jobs/{job_id}/output/") == []

    # A retry goes on where the ingest stopped: the files already copied are converted, the
    # others ingested first.
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.json()["retried_files"] == 8
    assert sent.ingests == [job_id]
    assert sorted(sent.conversions) == sorted([ids["0.docx"], ids["1.docx"]])
    run_queued(sent, converter)
    assert job_row(job_id).status == JobStatus.COMPLETED
    assert sorted(result_members(job_id)) == sorted(name.replace(".docx", ".pdf") for name in names)


def test_a_delete_stops_the_ingest_and_removes_what_it_copied_since(
    client: TestClient, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_documents(client, {f"{i}.docx": make_docx(str(i)) for i in range(8)})
    _interrupt_ingest(
        monkeypatch, 3, lambda: client.delete(f"/api/v1/jobs/{job_id}").raise_for_status()
    )
    ingest_job(sent.ingests.pop(), get_store(), get_settings())
    run_queued(sent, converter)  # the conversions queued before the delete find nothing
    assert job_keys(job_id) == []


NOTHING_SWEPT = {"ingests": 0, "conversions": 0, "archives": 0, "dispatched": 0}


def test_the_sweeper_leaves_a_cancelled_job_alone_and_resends_a_retried_jobs_lost_work(
    client: TestClient, sent: SentTasks, converter: Converter
) -> None:
    settings = get_settings()
    job_id = submit_documents(client, {"a.docx": make_docx("Alpha"), "b.docx": make_docx("Beta")})
    sent.ingests.clear()  # the ingest message is lost
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    age(job_id, settings.stale_after + 5)
    assert sweep(settings) == NOTHING_SWEPT

    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 202
    assert sent.ingests == [job_id]
    sent.ingests.clear()  # lost again: the sweeper sends it once the job is idle
    assert sweep(settings) == NOTHING_SWEPT  # not yet stale
    age(job_id, settings.stale_after + 5)
    assert sweep(settings)["ingests"] == 1 and sent.ingests == [job_id]
    run_queued(sent, converter)
    assert job_row(job_id).status == JobStatus.COMPLETED
    assert sorted(result_members(job_id)) == ["a.pdf", "b.pdf"]
