"""``quire convert --strict-fonts`` and the font counts the CLI prints, over a stand-in API
(``httpx.MockTransport``: the network is the one part replaced). The real service answers the
same in tests/e2e/test_fonts.py."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from quire_client import Client
from quire_client.cli import commands
from quire_client.cli.errors import EXIT_OK
from quire_client.client import JobOptions
from tests.client.helpers import form_fields, one_document_folder, use_stand_in

JOB = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
COUNTS = {"files_with_substitutions": 2, "files_with_missing_fonts": 1}
COUNTS_LINE = "fonts: 2 files with substituted fonts, 1 with missing fonts"


def status_document(fonts: dict[str, int]) -> dict[str, Any]:
    return {
        "job_id": JOB,
        "status": "COMPLETED",
        "progress": {"total": 1, "pending": 0, "in_progress": 0, "completed": 1, "failed": 0},
        "fonts": fonts,
        "files": [
            {
                "file_id": "f0",
                "filename": "a.docx",
                "output_name": "a.pdf",
                "status": "COMPLETED",
                "fonts": {"substituted": {}, "missing": ["Brand Sans"]},
            }
        ],
    }


def result_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as pdfs:
        pdfs.writestr("a.pdf", b"%PDF-1.7 a")
    return buffer.getvalue()


class FontsApi:
    """Answers as a Quire server; keeps what the submission asked for (form fields or JSON)."""

    def __init__(self, *, direct_uploads: bool = False, fonts: dict[str, int] = COUNTS) -> None:
        self.direct_uploads = direct_uploads
        self.fonts = fonts
        self.asked: dict[str, Any] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/uploads":
            if not self.direct_uploads:
                return httpx.Response(
                    404, json={"error": {"status": 404, "code": "not_found", "message": "x"}}
                )
            offer = {"upload_id": JOB, "url": "http://store.test/u", "headers": {}}
            return httpx.Response(201, json={**offer, "method": "PUT", "max_bytes": 2**31})
        if request.url.host == "store.test":
            return httpx.Response(200)
        if path == "/api/v1/jobs" and request.method == "POST":
            if request.headers["content-type"].startswith("application/json"):
                self.asked = json.loads(request.read())
            else:
                self.asked = form_fields(request)
            created = {"job_id": JOB, "status": "PENDING", "file_count": 1, "status_url": "x"}
            return httpx.Response(202, json=created)
        if path.endswith("/events"):
            return httpx.Response(200, text='event: job\ndata: {"progress": {}}\n\n')
        if path.endswith("/download"):
            return httpx.Response(200, content=result_zip())
        return httpx.Response(200, json=status_document(self.fonts))


def use(monkeypatch: pytest.MonkeyPatch, fake: FontsApi) -> FontsApi:
    return use_stand_in(monkeypatch, fake)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return one_document_folder(tmp_path)


def test_convert_with_strict_fonts_asks_for_it_and_prints_the_counts(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = use(monkeypatch, FontsApi())
    arguments = ["convert", str(folder), "-o", f"{tmp_path}/pdfs/", "--strict-fonts"]
    assert commands.main([*arguments, "--server", "http://a.test"]) == EXIT_OK
    assert api.asked.get("strict_fonts") == "true"
    assert COUNTS_LINE in capsys.readouterr().out


def test_without_strict_fonts_nothing_is_asked_and_no_counts_no_line(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    none = {"files_with_substitutions": 0, "files_with_missing_fonts": 0}
    api = use(monkeypatch, FontsApi(fonts=none))
    arguments = ["convert", str(folder), "-o", f"{tmp_path}/pdfs/", "--server", "http://a.test"]
    assert commands.main(arguments) == EXIT_OK
    assert "strict_fonts" not in api.asked
    assert "fonts:" not in capsys.readouterr().out


def test_status_prints_the_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, FontsApi())
    assert commands.main(["status", JOB, "--server", "http://a.test"]) == EXIT_OK
    assert COUNTS_LINE in capsys.readouterr().out


def test_a_direct_upload_sends_strict_fonts_in_the_json_body(folder: Path) -> None:
    api = FontsApi(direct_uploads=True)
    with Client("http://a.test", transport=httpx.MockTransport(api)) as client:
        client.submit(folder, JobOptions(strict_fonts=True))
    assert api.asked["upload_id"] == JOB and api.asked["strict_fonts"] is True
