"""``quire convert --merge PDF`` and ``quire download --merged`` over a stand-in API
(``httpx.MockTransport``: the network is the one part replaced). What the options send, and
where the merged PDF is written. The real service answers the same in
tests/e2e/test_merged_pdf.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from quire_client.cli import commands
from quire_client.cli.errors import EXIT_OK
from tests.client.helpers import form_fields, one_document_folder, use_stand_in

JOB = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
MERGED = b"%PDF-1.7 the whole job"


def status_document() -> dict[str, Any]:
    return {
        "job_id": JOB,
        "status": "COMPLETED",
        "progress": {"total": 1, "pending": 0, "in_progress": 0, "completed": 1, "failed": 0},
        "files": [
            {"file_id": "f0", "filename": "a.docx", "output_name": "a.pdf", "status": "COMPLETED"}
        ],
        "merged_url": f"http://a.test/api/v1/jobs/{JOB}/merged",
        "merged_bytes": len(MERGED),
    }


def result_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as pdfs:
        pdfs.writestr("a.pdf", b"%PDF-1.7 a")
    return buffer.getvalue()


class MergingApi:
    """Answers as a Quire server without direct uploads; keeps the submission's form fields."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if path == "/api/v1/uploads":
            return httpx.Response(
                404, json={"error": {"status": 404, "code": "not_found", "message": "Not Found"}}
            )
        if path == "/api/v1/jobs" and request.method == "POST":
            self.fields = form_fields(request)
            created = {"job_id": JOB, "status": "PENDING", "file_count": 1, "status_url": "x"}
            return httpx.Response(202, json=created)
        if path.endswith("/events"):
            return httpx.Response(200, text='event: job\ndata: {"progress": {}}\n\n')
        if path.endswith("/download"):
            return httpx.Response(200, content=result_zip())
        if path.endswith("/merged"):
            return httpx.Response(200, content=MERGED)
        return httpx.Response(200, json=status_document())


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> MergingApi:
    return use_stand_in(monkeypatch, MergingApi())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return one_document_folder(tmp_path)


def test_convert_with_merge_asks_for_it_and_writes_the_merged_pdf(
    api: MergingApi, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged = tmp_path / "whole.pdf"
    arguments = ["convert", str(folder), "-o", f"{tmp_path}/pdfs/", "--merge", str(merged)]
    assert commands.main([*arguments, "--server", "http://a.test"]) == EXIT_OK
    assert api.fields.get("merge") == "true" and "merge_failure_page" not in api.fields
    assert merged.read_bytes() == MERGED
    assert (tmp_path / "pdfs" / "a.pdf").read_bytes() == b"%PDF-1.7 a"
    assert "one PDF of the whole job" in capsys.readouterr().err


def test_no_failure_page_is_sent_and_needs_merge(
    api: MergingApi, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["-o", f"{tmp_path}/pdfs/", "--server", "http://a.test"]
    merge = ["--merge", str(tmp_path / "m.pdf"), "--no-failure-page"]
    assert commands.main(["convert", str(folder), *out, *merge]) == EXIT_OK
    assert api.fields.get("merge") == "true" and api.fields.get("merge_failure_page") == "false"

    api.fields = {}
    assert commands.main(["convert", str(folder), *out, "--no-failure-page"]) != EXIT_OK
    assert "--no-failure-page goes with --merge" in capsys.readouterr().err
    assert api.fields == {}  # refused before anything was sent


def test_without_merge_nothing_is_asked_or_fetched(
    api: MergingApi, folder: Path, tmp_path: Path
) -> None:
    arguments = ["convert", str(folder), "-o", f"{tmp_path}/pdfs/", "--server", "http://a.test"]
    assert commands.main(arguments) == EXIT_OK
    assert "merge" not in api.fields
    assert not any(path.endswith("/merged") for path in api.paths)


def test_download_merged_and_status_show_the_merged_pdf(
    api: MergingApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "merged.pdf"
    server = ["--server", "http://a.test"]
    assert commands.main(["download", JOB, "--merged", "-o", str(target), *server]) == EXIT_OK
    assert target.read_bytes() == MERGED
    assert commands.main(["status", JOB, *server]) == EXIT_OK
    assert f"quire download {JOB} --merged -o merged.pdf" in capsys.readouterr().out
