"""End to end: the real API and worker processes, uploads over HTTP, downloads by redirect."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import CORPUS
from tests.docx_factory import bad_documents, make_docx, make_zip
from tests.e2e.conftest import FaultRecord, Service, soffice_processes_under
from tests.e2e.helpers import compose_like_env, embedded_env
from tests.pdf import pdf_pages

pytestmark = pytest.mark.e2e

# Good documents with known pages: path in the zip -> the text of each page.
GOOD = {
    "intro.docx": ["Quire converts documents", "in bulk"],
    "reports/2024/report.docx": ["Annual report 2024"],
    "reports/2025/report.docx": ["Annual report 2025", "Appendix", "Index"],
    "Reports/2025/REPORT.docx": ["Shouting duplicate"],  # collides with the one above ignoring case
    "unicode/ελληνικά.docx": ["Καλημέρα κόσμε"],
}
CORPUS_GOOD = {
    "corpus/alternate.docx": "pandoc/test__docx__alternate_document_path.docx",
    "corpus/comments.docx": "pandoc/test__docx__comments.docx",
    "corpus/tables.docx": "pandoc/test__docx__tables.docx",
    "corpus/decrypted.docx": "encrypted/tests__outputs__example.docx",
}
CORPUS_BAD = {"corpus/encrypted.docx": "encrypted/tests__inputs__example_password.docx"}
LITTER = {
    "__MACOSX/reports/._report.docx": b"resource fork",
    ".DS_Store": b"x",
    "reports/~$report.docx": b"lock",
    "notes.txt": b"not a docx",
}


def mixed_zip() -> bytes:
    entries = {name: make_docx(*pages) for name, pages in GOOD.items()}
    entries |= {name: (CORPUS / path).read_bytes() for name, path in CORPUS_GOOD.items()}
    entries |= {name: (CORPUS / path).read_bytes() for name, path in CORPUS_BAD.items()}
    entries |= {f"bad/{name}": data for name, data in bad_documents().items()}
    entries |= LITTER
    return make_zip(entries)


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3-redis"])
def test_a_mixed_zip_gives_per_file_results_and_correct_pdfs(
    stack: str,
    request: pytest.FixtureRequest,
    make_service: Callable[[dict[str, str]], Service],
    tmp_path: Path,
) -> None:
    env = embedded_env() if stack == "embedded" else compose_like_env(request)
    service = make_service(env)
    service.start()

    response = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", mixed_zip(), "application/zip")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    created = response.json()
    expected_count = len(GOOD) + len(CORPUS_GOOD) + len(CORPUS_BAD) + len(bad_documents())
    assert created["file_count"] == expected_count

    status = service.wait_for_job(created["job_id"])
    assert status["status"] == "COMPLETED", status
    files = {f["filename"]: f for f in status["files"]}  # type: ignore[attr-defined]
    assert set(files) == set(GOOD) | set(CORPUS_GOOD) | set(CORPUS_BAD) | {
        f"bad/{name}" for name in bad_documents()
    }
    for name in [*GOOD, *CORPUS_GOOD]:
        assert files[name]["status"] == "COMPLETED", files[name]
    for name in [*CORPUS_BAD, *(f"bad/{n}" for n in bad_documents())]:
        assert files[name]["status"] == "FAILED", name
        assert files[name]["error_message"], name
    assert "password-protected" in files["corpus/encrypted.docx"]["error_message"]
    progress = status["progress"]
    assert progress["completed"] == len(GOOD) + len(CORPUS_GOOD)  # type: ignore[index]
    assert progress["failed"] == len(CORPUS_BAD) + len(bad_documents())  # type: ignore[index]

    download = httpx.get(str(status["download_url"]), follow_redirects=True, timeout=60)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert download.history and download.history[0].status_code == 307
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.testzip() is None
        members = {name: archive.read(name) for name in archive.namelist()}

    expected_names = {files[name]["output_name"] for name in [*GOOD, *CORPUS_GOOD]}
    assert set(members) == expected_names
    assert files["Reports/2025/REPORT.docx"]["output_name"] == "Reports/2025/REPORT (2).pdf"
    for name, pages in GOOD.items():
        texts = pdf_pages(members[files[name]["output_name"]])
        assert len(texts) == len(pages), name
        for text, page in zip(texts, pages, strict=True):
            assert page in text, (name, page, text)
    for name in CORPUS_GOOD:
        texts = pdf_pages(members[files[name]["output_name"]])
        assert texts and any(t.strip() for t in texts), name

    assert service.stop() == 0
    assert soffice_processes_under(service.data_dir) == []


@pytest.mark.faults
def test_a_restart_mid_job_resumes_and_loses_nothing(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    count = 80
    entries = {
        f"batch/doc-{i:03}.docx": make_docx(f"Document number {i}", "Second page")
        for i in range(count)
    }
    service = make_service(embedded_env())
    service.start()
    job_id = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", make_zip(entries), "application/zip")},
        timeout=60,
    ).json()["job_id"]
    ledger.inputs, ledger.jobs = count, 1
    partial = service.wait_for_job(job_id, until=lambda s: s["progress"]["completed"] >= 5)  # type: ignore[index]
    assert partial["status"] == "IN_PROGRESS"
    assert service.stop() == 0  # SIGTERM: the runner stops every process it started
    ledger.faults.append("SIGTERM to the whole stack")
    assert soffice_processes_under(service.data_dir) == []

    service.start()  # the same data directory
    ledger.faults.append("started again on the same data directory")
    status = service.wait_for_job(job_id)
    assert status["status"] == "COMPLETED", status
    assert status["progress"]["completed"] == count  # type: ignore[index]
    download = httpx.get(str(status["download_url"]), follow_redirects=True, timeout=60)
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        ledger.jobs_completed = 1
        ledger.duplicates = len(names) - len(set(names))
        ledger.files_lost = count - len(set(names))
        assert sorted(names) == sorted(f"batch/doc-{i:03}.pdf" for i in range(count))
        text = pdf_pages(archive.read("batch/doc-042.pdf"))
    assert len(text) == 2 and "Document number 42" in text[0]


def test_live_events_follow_a_job_to_its_end(
    make_service: Callable[[dict[str, str]], Service],
) -> None:
    service = make_service(embedded_env())
    service.start()
    entries = {f"live/{i}.docx": make_docx(f"live {i}") for i in range(8)} | {"bad.docx": b"x"}
    job_id = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("live.zip", make_zip(entries), "application/zip")},
        timeout=60,
    ).json()["job_id"]
    events = []
    with httpx.stream("GET", f"{service.url}/api/v1/jobs/{job_id}/events", timeout=120) as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    terminal = [
        data["filename"]
        for name, data in events
        if name == "file" and data["status"] in ("COMPLETED", "FAILED")
    ]
    assert sorted(terminal) == sorted(entries)  # every file's end, each exactly once
    assert events[-1][0] == "job" and events[-1][1]["status"] == "COMPLETED"
    assert any(name == "progress" for name, _ in events)
