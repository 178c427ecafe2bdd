"""``quire_client.testing.FakeQuire``, the fake shipped beside the client: the client's whole
API works against it as against a server, so code using the client can be tested without one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from quire_client import (
    Client,
    Conflict,
    FileStatus,
    Forbidden,
    JobOptions,
    JobStatus,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from quire_client.testing import NOT_A_DOCX, FakeQuire
from tests.docx_factory import make_docx


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.docx").write_bytes(make_docx("a"))
    (root / "sub" / "b.docx").write_bytes(make_docx("b"))
    (root / "broken.docx").write_bytes(b"not a zip")
    return root


def test_a_job_from_submission_to_deletion(folder: Path, tmp_path: Path) -> None:
    fake = FakeQuire()
    with Client("http://quire.test", transport=fake.transport(), retry_delay=0) as quire:
        submitted = quire.submit(folder, JobOptions(pdf_a="2b"))
        assert submitted.direct_upload and submitted.file_count == 3
        job = quire.wait(submitted.job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.raw["options"] == {"pdf_a": "2b", "tagged_pdf": False}
        assert [(f.filename, f.error_message) for f in job.failed_files] == [
            ("broken.docx", NOT_A_DOCX)
        ]

        out = tmp_path / "out"
        written = quire.download_to_folder(job.job_id, out)
        assert sorted(p.relative_to(out).as_posix() for p in written) == ["a.pdf", "sub/b.pdf"]
        quire.download(job.job_id, tmp_path / "all.zip")
        with zipfile.ZipFile(tmp_path / "all.zip") as pdfs:
            assert sorted(pdfs.namelist()) == ["a.pdf", "sub/b.pdf"]
        good = next(f for f in job.files if f.status is FileStatus.COMPLETED)
        assert quire.download_file(job.job_id, good.file_id, tmp_path / "one.pdf") > 0

        assert quire.retry(job.job_id).retried_files == 1
        assert quire.wait(job.job_id).progress.failed == 1  # broken stays broken
        with pytest.raises(Conflict):
            quire.cancel(job.job_id)
        assert [j.job_id for j in quire.iter_jobs()] == [job.job_id]
        quire.delete(job.job_id)
        with pytest.raises(NotFound):
            quire.job(job.job_id)


def test_multipart_held_jobs_keys_and_refusals(folder: Path) -> None:
    fake = FakeQuire(api_keys=("k",), direct_uploads=False, hold=True)
    transport = fake.transport()
    with Client("http://quire.test", transport=transport) as anonymous, pytest.raises(Unauthorized):
        anonymous.jobs()
    with (
        Client("http://quire.test", "wrong", transport=transport) as wrong,
        pytest.raises(Forbidden),
    ):
        wrong.jobs()

    with Client("http://quire.test", "k", transport=transport, retry_delay=0) as quire:
        held = quire.submit(folder, JobOptions(tagged_pdf=True))
        assert not held.direct_upload
        assert quire.job(held.job_id).status is JobStatus.IN_PROGRESS
        assert quire.cancel(held.job_id).cancelled_files == 3

        other = quire.submit(folder).job_id
        fake.finish(other)
        fake.refuse_next(503, "Database down.")  # sent again by the client: a success
        assert quire.job(other).status is JobStatus.COMPLETED
        for _ in range(3):
            fake.refuse_next(503, "Database down.")
        with pytest.raises(ServiceUnavailable, match="Database down"):
            quire.job(other)
        assert quire.jobs(status=JobStatus.CANCELLED).jobs[0].job_id == held.job_id
