"""The SDK, ``quire_client.Client``, against the real service (``infra/run_embedded.py``): each
call of a job's life, from submission to deletion, as a program using the package would make
it. Its error paths with a stand-in network are in tests/client/test_client_errors.py.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from quire_client import (
    BadRequest,
    Client,
    Conflict,
    FileStatus,
    JobOptions,
    JobStatus,
    NotFound,
    Progress,
)
from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import Service
from tests.pdf import pdf_pages

pytestmark = pytest.mark.e2e

GOOD = {
    "intro.docx": make_docx("Quire converts documents", "in bulk"),
    "reports/2025/annual.docx": make_docx("Annual report 2025"),
    "letters/ελληνικά.docx": make_docx("Καλημέρα κόσμε"),
}
BAD = {"notes.docx": b"Just some text, renamed to .docx.\n" * 5}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the module: every test here only adds jobs of its own."""
    home = tmp_path_factory.mktemp("client-service")
    running = Service(
        data_dir=home / "data",
        env={"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "client"},
        log_path=home / "service.log",
    )
    running.start()
    yield running
    running.stop()


@pytest.fixture
def quire(service: Service) -> Iterator[Client]:
    with Client(service.url) as quire:
        yield quire


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    for name, data in (GOOD | BAD).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "readme.txt").write_text("not a document")
    return root


def pdf_name(docx: str) -> str:
    return docx.removesuffix(".docx") + ".pdf"


def test_submit_follow_and_download_a_folder(quire: Client, folder: Path, tmp_path: Path) -> None:
    sent: list[int] = []
    submitted = quire.submit(folder, JobOptions(tagged_pdf=True), sent=sent.append)
    assert submitted.file_count == len(GOOD) + len(BAD)
    assert submitted.direct_upload and submitted.status is JobStatus.PENDING
    assert sum(sent) > 0

    events = list(quire.events(submitted.job_id))
    assert events[-1].name == "job"
    assert {event.name for event in events} <= {"file", "progress", "job"}
    final = events[-1].progress
    assert final is not None and final.finished == submitted.file_count

    seen: list[Progress] = []
    job = quire.wait(submitted.job_id, on_progress=seen.append)  # ended: one job event
    assert job.status is JobStatus.COMPLETED and seen[-1].completed == len(GOOD)
    assert job.progress.failed == len(BAD)
    assert [file.filename for file in job.failed_files] == ["notes.docx"]
    assert job.raw["options"]["tagged_pdf"] is True

    archive = tmp_path / "result.zip"
    received: list[int] = []
    assert quire.download(job.job_id, archive, received=received.append) == sum(received)
    with zipfile.ZipFile(archive) as pdfs:
        assert set(pdfs.namelist()) == {pdf_name(name) for name in GOOD}

    out = tmp_path / "pdfs"
    written = quire.download_to_folder(job.job_id, out)
    assert sorted(path.relative_to(out).as_posix() for path in written) == sorted(
        pdf_name(name) for name in GOOD
    )
    assert "Καλημέρα κόσμε" in pdf_pages((out / "letters/ελληνικά.pdf").read_bytes())[0]

    by_name = {file.filename: file for file in job.files}
    annual = by_name["reports/2025/annual.docx"]
    assert annual.status is FileStatus.COMPLETED
    one = tmp_path / "annual.pdf"
    quire.download_file(job.job_id, annual.file_id, one)
    assert "Annual report 2025" in pdf_pages(one.read_bytes())[0]
    with pytest.raises(Conflict, match="failed and has no PDF"):
        quire.download_file(job.job_id, by_name["notes.docx"].file_id, tmp_path / "n.pdf")


def test_retry_cancel_list_and_delete(quire: Client, folder: Path, tmp_path: Path) -> None:
    job_id = quire.submit(folder).job_id
    quire.wait(job_id)
    with pytest.raises(Conflict, match="already ended"):
        quire.cancel(job_id)

    retried = quire.retry(job_id)
    assert retried.retried_files == len(BAD) and retried.status is JobStatus.IN_PROGRESS
    again = quire.wait(job_id)
    assert again.status is JobStatus.COMPLETED and again.progress.failed == len(BAD)

    batch = tmp_path / "batch"
    for index in range(30):
        (batch / f"d{index:02}.docx").parent.mkdir(exist_ok=True)
        (batch / f"d{index:02}.docx").write_bytes(make_docx(f"document {index}"))
    running = quire.submit(batch).job_id
    cancelled = quire.cancel(running)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.cancelled_files > 0
    assert quire.wait(running).status is JobStatus.CANCELLED

    listed = {job.job_id: job for job in quire.iter_jobs()}
    assert listed[job_id].status is JobStatus.COMPLETED
    assert listed[running].status is JobStatus.CANCELLED
    assert running in {job.job_id for job in quire.jobs(status=JobStatus.CANCELLED).jobs}

    quire.delete(running)
    with pytest.raises(NotFound):
        quire.job(running)


def test_the_api_refusals_arrive_as_their_errors(quire: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="No job with id") as raised:
        quire.job("0f0f0f0f-0000-4000-8000-000000000000")
    assert (raised.value.status, raised.value.code) == (404, "not_found")

    empty = tmp_path / "empty.zip"
    empty.write_bytes(make_zip({"readme.txt": b"no documents"}))
    with pytest.raises(BadRequest) as refused:
        quire.submit(empty)
    assert refused.value.status == 400 and refused.value.message
