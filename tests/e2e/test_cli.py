"""The installed ``quire`` command against the real service (``infra/run_embedded.py``).

Run as a person or a script would: the console script in the virtual environment, in a child
process, output captured (so not a terminal: the plain progress lines, not the bars).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CORPUS
from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import ForwardingProxy, OldServerProxy, proxy_to
from tests.pdf import pdf_pages
from tests.services import free_port

pytestmark = pytest.mark.e2e

QUIRE = Path(sys.executable).parent / "quire"  # the entry point pip installed
NOT_A_ZIP = "The file is not a DOCX document: it is not a zip package"

GOOD = {
    "intro.docx": make_docx("Quire converts documents", "in bulk"),
    "reports/2025/annual.docx": make_docx("Annual report 2025"),
    "reports/tables.docx": (CORPUS / "pandoc/test__docx__tables.docx").read_bytes(),
    "letters/ελληνικά.docx": make_docx("Καλημέρα κόσμε"),
}
BAD = {
    "notes.docx": b"Just some text, renamed to .docx.\n" * 5,
    "reports/broken.docx": make_docx("cut short")[:200],
}
IGNORED = {
    "readme.txt": b"not a document",
    "reports/~$annual.docx": b"a Word lock file",
    "reports/chart.png": b"\x89PNG",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the module: every test here only adds jobs of its own."""
    home = tmp_path_factory.mktemp("cli-service")
    running = Service(
        data_dir=home / "data",
        env={"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "cli"},
        log_path=home / "service.log",
    )
    running.start()
    yield running
    running.stop()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    for name, data in (GOOD | BAD | IGNORED).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def quire(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("QUIRE_SERVER", "QUIRE_API_KEY")}
    return subprocess.run(
        [str(QUIRE), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def pdf_names(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as pdfs:
        assert pdfs.testzip() is None
        return set(pdfs.namelist())


def expected_pdfs() -> set[str]:
    return {name.removesuffix(".docx") + ".pdf" for name in GOOD}


def without_signed_urls(document: dict[str, Any]) -> dict[str, Any]:
    """The status document less each file's presigned link, which is signed anew every time."""
    files = [{k: v for k, v in f.items() if k != "download_url"} for f in document["files"]]
    return {**document, "files": files}


def job_id_of(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("Job "))
    return line.split()[1].rstrip(":")


def test_convert_a_folder_reports_failures_and_exits_non_zero(
    service: Service, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.zip"
    result = quire("convert", str(folder), "-o", str(out), "--server", service.url)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # Only the .docx files went up, lock files left out, with their paths.
    assert f"Zipped {len(GOOD) + len(BAD)} documents" in result.stderr
    assert "Uploaded" in result.stderr
    assert "no direct upload" not in result.stderr  # PUT to the store's signed URL
    assert "polling" not in result.stderr  # followed through the event stream
    total = len(GOOD) + len(BAD)
    assert f"Converting: {total}/{total} files: {len(GOOD)} done, {len(BAD)} failed" in (
        result.stderr
    )
    # The summary and the failure table, one line per failed file with its message.
    assert f"{len(GOOD)} converted, {len(BAD)} failed, {total} files" in result.stdout
    assert f"{len(BAD)} of {total} files failed:" in result.stdout
    table = {
        line.split()[0]: line
        for line in result.stdout.splitlines()
        if line.startswith("  ") and not line.strip().startswith("FILE")
    }
    assert set(table) == set(BAD)
    assert NOT_A_ZIP in table["notes.docx"]
    assert "damaged or truncated DOCX" in table["reports/broken.docx"]

    assert pdf_names(out) == expected_pdfs()
    with zipfile.ZipFile(out) as pdfs:
        pages = pdf_pages(pdfs.read("intro.pdf"))
        assert len(pages) == 2 and "Quire converts documents" in pages[0]
        assert "Καλημέρα κόσμε" in pdf_pages(pdfs.read("letters/ελληνικά.pdf"))[0]
    assert not list(tmp_path.glob(".*.part"))  # the partial download was renamed into place


def test_allow_failures_exits_zero_and_a_zip_goes_up_as_it_is(
    service: Service, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.zip"
    batch.write_bytes(make_zip(GOOD | BAD | IGNORED))
    out = tmp_path / "pdfs.zip"

    result = quire(
        "convert", str(batch), "-o", str(out), "--allow-failures", env={"QUIRE_SERVER": service.url}
    )

    assert result.returncode == 0, result.stderr
    assert "Zipped" not in result.stderr  # a zip is sent as it is
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} files failed:" in result.stdout
    assert pdf_names(out) == expected_pdfs()


def test_a_clean_batch_exits_zero_and_passes_the_options(service: Service, tmp_path: Path) -> None:
    one = tmp_path / "single.docx"
    one.write_bytes(make_docx("Just one"))
    out = tmp_path / "single.zip"

    result = quire(
        "convert", str(one), "-o", str(out), "--server", service.url, "--pdf-a", "2b",
        "--tagged-pdf",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "failed:" not in result.stdout
    assert pdf_names(out) == {"single.pdf"}
    job = httpx.get(f"{service.url}/api/v1/jobs/{job_id_of(result.stdout)}", timeout=30).json()
    if "options" in job:  # a server that takes options echoes them in the status
        assert job["options"] == {
            "pdf_a": "2b",
            "tagged_pdf": True,
            "strict_fonts": False,
            "merge": False,
            "merge_failure_page": True,
        }


def test_status_and_download_of_a_finished_job(
    service: Service, folder: Path, tmp_path: Path
) -> None:
    converted = quire(
        "convert", str(folder), "-o", str(tmp_path / "a.zip"), "--server", service.url
    )
    job_id = job_id_of(converted.stdout)

    status = quire("status", job_id, "--server", service.url)
    assert status.returncode == 0, status.stderr
    assert f"Job {job_id}: COMPLETED" in status.stdout
    total = len(GOOD) + len(BAD)
    assert f"{total}/{total} files: {len(GOOD)} done, {len(BAD)} failed" in status.stdout
    assert "notes.docx" in status.stdout and NOT_A_ZIP in status.stdout

    raw = quire("status", job_id, "--json", "--server", service.url)
    assert raw.returncode == 0
    document = json.loads(raw.stdout)
    assert document["job_id"] == job_id and document["status"] == "COMPLETED"
    fetched_now = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", timeout=30).json()
    assert without_signed_urls(document) == without_signed_urls(fetched_now)

    again = tmp_path / "again.zip"
    fetched = quire("download", job_id, "-o", str(again), "--server", service.url)
    assert fetched.returncode == 0, fetched.stderr
    assert pdf_names(again) == expected_pdfs()


def pdfs_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def test_global_options_before_the_command_and_pdfs_into_a_folder(
    service: Service, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pdfs"
    result = quire("--server", service.url, "convert", str(folder), "-o", f"{out}/")

    assert result.returncode == 1, result.stderr  # the BAD files failed
    assert f"Saved {len(GOOD)} PDFs under {out}" in result.stderr
    # The input's folders, each .docx its .pdf, and nothing else (no scratch left behind).
    assert pdfs_under(out) == expected_pdfs()
    pages = pdf_pages((out / "letters/ελληνικά.pdf").read_bytes())
    assert "Καλημέρα κόσμε" in pages[0]

    job_id = job_id_of(result.stdout)
    for args in (
        ["--server", service.url, "status", job_id],
        ["status", job_id, "--server", service.url],
    ):
        status = quire(*args)
        assert status.returncode == 0, status.stderr
        assert f"Job {job_id}: COMPLETED" in status.stdout

    # download into a folder that exists (no trailing slash needed), with a file of its own.
    again = tmp_path / "again"
    again.mkdir()
    (again / "keep.txt").write_text("mine")
    fetched = quire("--server", service.url, "download", job_id, "-o", str(again))
    assert fetched.returncode == 0, fetched.stderr
    assert pdfs_under(again) == expected_pdfs() | {"keep.txt"}


def test_expected_failures_are_one_clean_line(service: Service, tmp_path: Path) -> None:
    unknown = "0f0f0f0f-0000-4000-8000-000000000000"
    for args in (["status", unknown], ["download", unknown, "-o", str(tmp_path / "x.zip")]):
        result = quire(*args, "--server", service.url)
        assert result.returncode == 3
        assert result.stderr.startswith("quire: error: 404 Not Found: No job with id")
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr

    nothing = tmp_path / "empty"
    nothing.mkdir()
    (nothing / "readme.txt").write_text("no documents")
    result = quire("convert", str(nothing), "-o", str(tmp_path / "o.zip"), "--server", service.url)
    assert result.returncode == 3
    assert result.stderr == (
        f"quire: error: {nothing} holds no .docx, .docm, .doc, .rtf or .odt file\n"
    )

    # The server refuses a zip without documents: its own message, one line.
    empty_zip = tmp_path / "empty.zip"
    empty_zip.write_bytes(make_zip({"readme.txt": b"no documents"}))
    result = quire(
        "convert", str(empty_zip), "-o", str(tmp_path / "o.zip"), "--server", service.url
    )
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1].startswith("quire: error: 400 Bad Request: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.zip").exists()


def test_a_wrong_server_is_a_clean_error(tmp_path: Path, folder: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = quire("convert", str(folder), "-o", str(tmp_path / "out.zip"), "--server", nowhere)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1].startswith(
        f"quire: error: cannot reach the Quire server at {nowhere}"
    )
    assert "Traceback" not in result.stderr

    result = quire("status", "some-job", env={"QUIRE_SERVER": nowhere})
    assert result.returncode == 3
    assert result.stderr.startswith(f"quire: error: cannot reach the Quire server at {nowhere}")


def test_without_direct_uploads_and_events_the_cli_sends_multipart_and_polls(
    service: Service, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "polled.zip"
    with proxy_to(service.url, OldServerProxy) as url:
        result = quire("convert", str(folder), "-o", str(out), "--server", url)
    assert result.returncode == 1, result.stderr
    assert "the server offers no direct upload: the zip went through the API" in result.stderr
    assert "live events unavailable: the event stream answered 502; polling instead" in (
        result.stderr
    )
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} files failed:" in result.stdout
    assert pdf_names(out) == expected_pdfs()


def test_an_api_key_from_the_option_or_the_environment(
    make_service: Callable[[dict[str, str]], Service], folder: Path, tmp_path: Path
) -> None:
    keyed = make_service(
        {"QUIRE_WORKER_CONCURRENCY": "1", "QUIRE_SECRET_KEY": "cli", "QUIRE_API_KEYS": "k-1,k-2"}
    )
    keyed.start()
    out = tmp_path / "out.zip"

    missing = quire("convert", str(folder), "-o", str(out), "--server", keyed.url)
    assert missing.returncode == 3
    assert missing.stderr.splitlines()[-1] == (
        "quire: error: 401 Unauthorized: This server needs an API key: send the header "
        "'Authorization: Bearer <key>'. (give the key with --api-key or QUIRE_API_KEY)"
    )
    wrong = quire("status", "any", "--server", keyed.url, "--api-key", "nope")
    assert wrong.returncode == 3 and "403 Forbidden" in wrong.stderr

    # The key goes with every API call, the event stream's too, and never to the signed URLs.
    done = quire(
        "convert", str(folder), "-o", str(out), "--allow-failures",
        env={"QUIRE_SERVER": keyed.url, "QUIRE_API_KEY": "k-2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "polling" not in done.stderr and "no direct upload" not in done.stderr
    assert pdf_names(out) == expected_pdfs()
    job_id = job_id_of(done.stdout)
    status = quire("status", job_id, "--server", keyed.url, "--api-key", "k-2")
    assert status.returncode == 0 and f"Job {job_id}: COMPLETED" in status.stdout


def test_direct_upload_to_s3_with_an_api_key(
    request: pytest.FixtureRequest,
    make_service: Callable[[dict[str, str]], Service],
    folder: Path,
    tmp_path: Path,
) -> None:
    """The compose shape (PostgreSQL, an S3 server, Redis): the zip is PUT to a presigned S3
    URL and the archive fetched from one, which S3 refuses if the API key rides along."""
    from tests.conftest import _fresh_database

    stack = make_service(
        {
            "QUIRE_WORKER_CONCURRENCY": "2",
            "QUIRE_SECRET_KEY": "cli",
            "QUIRE_API_KEYS": "s3-key",
            "QUIRE_DATABASE_URL": _fresh_database(request.getfixturevalue("postgres_url"), "cli"),
            "QUIRE_BROKER_URL": request.getfixturevalue("redis_url").replace("/0", "/6"),
            "QUIRE_STORAGE_BACKEND": "s3",
            "QUIRE_S3_ENDPOINT_URL": request.getfixturevalue("s3_endpoint"),
            "QUIRE_S3_BUCKET": "quire-cli",
            "QUIRE_S3_ACCESS_KEY": "test",
            "QUIRE_S3_SECRET_KEY": "test",
        }
    )
    stack.start()
    out = tmp_path / "out.zip"
    result = quire(
        "convert", str(folder), "-o", str(out), "--server", stack.url, "--api-key", "s3-key",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "no direct upload" not in result.stderr and "polling" not in result.stderr
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} files failed:" in result.stdout
    assert pdf_names(out) == expected_pdfs()


class LostAnswerProxy(ForwardingProxy):
    """The first job creation reaches the service, but its answer is lost on the way back, as
    on a flaky network."""

    lost = 0

    def answer_lost(self) -> bool:
        if self.command == "POST" and self.path == "/api/v1/jobs" and not LostAnswerProxy.lost:
            LostAnswerProxy.lost += 1
            return True
        return False


def test_a_lost_answer_to_the_job_creation_is_asked_again_without_a_second_job(
    service: Service, folder: Path, tmp_path: Path
) -> None:
    before = {job["job_id"] for job in all_jobs(service)}
    with proxy_to(service.url, LostAnswerProxy) as url:
        result = quire("convert", str(folder), "-o", str(tmp_path / "o.zip"), "--server", url)
    assert LostAnswerProxy.lost == 1
    assert result.returncode == 1, result.stderr
    assert pdf_names(tmp_path / "o.zip") == expected_pdfs()
    # The repeat carried the same Idempotency-Key: one job, not two.
    assert {job["job_id"] for job in all_jobs(service)} - before == {job_id_of(result.stdout)}


def all_jobs(service: Service) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{service.url}/api/v1/jobs", params=params, timeout=30).json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs
