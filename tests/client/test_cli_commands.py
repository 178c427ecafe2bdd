"""The ``quire`` command line over a stand-in API (``httpx.MockTransport``, the network being
the one part replaced): global options before or after the command, ``-o`` as a folder or a
zip, the job commands. The same runs against the real service in tests/e2e/test_cli.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from quire_client.cli import commands
from quire_client.cli.errors import EXIT_ERROR, EXIT_OK
from tests.client.helpers import use_stand_in
from tests.docx_factory import make_docx

JOB = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
PDFS = ["intro.pdf", "reports/2025/annual.pdf", "letters/ελληνικά.pdf"]


def archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as pdfs:
        for name in PDFS:
            pdfs.writestr(name, b"%PDF-1.7 " + name.encode())
    return buffer.getvalue()


def job_document() -> dict[str, Any]:
    files = [
        {
            "file_id": f"f{index}",
            "filename": name.removesuffix(".pdf") + ".docx",
            "output_name": name,
            "status": "COMPLETED",
        }
        for index, name in enumerate(PDFS)
    ]
    counts = {"total": 3, "pending": 0, "in_progress": 0, "completed": 3, "failed": 0}
    return {
        "job_id": JOB,
        "status": "COMPLETED",
        "progress": counts,
        "files": files,
        "result_bytes": len(archive()),
    }


class FakeApi:
    """Answers as a Quire server without direct uploads would; remembers what it was asked."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v1/uploads":
            return httpx.Response(
                404, json={"error": {"status": 404, "code": "not_found", "message": "Not Found"}}
            )
        if path == "/api/v1/jobs" and request.method == "POST":
            created = {"job_id": JOB, "status": "PENDING", "file_count": 3, "status_url": "x"}
            return httpx.Response(202, json=created)
        if path == "/api/v1/jobs":
            page = {
                "jobs": [
                    {
                        "job_id": JOB,
                        "status": "COMPLETED",
                        "file_count": 3,
                        "finished_files": 3,
                        "created_at": "2026-12-06T05:00:00Z",
                    }
                ],
                "next_cursor": None,
            }
            return httpx.Response(200, json=page)
        if path.endswith("/events"):
            ended = json.dumps({"progress": job_document()["progress"]})
            return httpx.Response(200, text=f"event: job\ndata: {ended}\n\n")
        if path.endswith("/download"):
            return httpx.Response(200, content=archive())
        if path.endswith("/retry"):
            return httpx.Response(
                202,
                json={
                    "job_id": JOB,
                    "status": "IN_PROGRESS",
                    "retried_files": 2,
                    "status_url": "x",
                },
            )
        if path.endswith("/cancel"):
            return httpx.Response(
                409,
                json={
                    "error": {
                        "status": 409,
                        "code": "conflict",
                        "message": f"Job {JOB} has already ended.",
                    }
                },
            )
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=job_document())

    @property
    def hosts(self) -> set[str]:
        return {request.url.host for request in self.requests}

    @property
    def keys(self) -> set[str | None]:
        return {request.headers.get("authorization") for request in self.requests}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return use_stand_in(monkeypatch, FakeApi())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    for name in PDFS:
        docx = root / (name.removesuffix(".pdf") + ".docx")
        docx.parent.mkdir(parents=True, exist_ok=True)
        docx.write_bytes(make_docx(name))
    return root


@pytest.mark.parametrize(
    "arguments",
    [
        ["--server", "http://a.test", "--api-key", "k1", "status", JOB],
        ["status", JOB, "--server", "http://a.test", "--api-key", "k1"],
        ["--server", "http://a.test", "status", "--api-key", "k1", JOB],
    ],
    ids=["before", "after", "mixed"],
)
def test_global_options_go_before_or_after_the_command(
    api: FakeApi, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(arguments) == EXIT_OK
    assert api.hosts == {"a.test"} and api.keys == {"Bearer k1"}
    assert f"Job {JOB}: COMPLETED" in capsys.readouterr().out


def test_an_option_after_the_command_wins_and_the_environment_is_the_default(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    last = ["--server", "http://a.test", "status", JOB, "--server", "http://b.test"]
    assert commands.main(last) == EXIT_OK
    assert api.hosts == {"b.test"}
    api.requests.clear()
    monkeypatch.setenv("QUIRE_SERVER", "http://env.test")
    monkeypatch.setenv("QUIRE_API_KEY", "from-env")
    assert commands.main(["status", JOB]) == EXIT_OK
    assert api.hosts == {"env.test"} and api.keys == {"Bearer from-env"}
    capsys.readouterr()


@pytest.mark.parametrize("order", ["before", "after"])
def test_convert_into_a_folder_mirrors_the_input(
    api: FakeApi, folder: Path, tmp_path: Path, order: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pdfs"
    options = ["--server", "http://a.test"]
    convert = ["convert", str(folder), "-o", f"{out}/"]
    arguments = options + convert if order == "before" else convert + options
    assert commands.main(arguments) == EXIT_OK, capsys.readouterr().err

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(PDFS)
    assert (out / "reports/2025/annual.pdf").read_bytes() == b"%PDF-1.7 reports/2025/annual.pdf"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no scratch left
    assert "Saved 3 PDFs under" in capsys.readouterr().err


def test_convert_to_a_zip_path_writes_the_zip_and_an_existing_folder_gets_the_pdfs(
    api: FakeApi, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.zip"
    assert commands.main(["convert", str(folder), "-o", str(target), "--server", "http://a"]) == 0
    assert target.read_bytes() == archive()

    existing = tmp_path / "existing"  # no trailing slash, but a folder already
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert commands.main(["download", JOB, "-o", str(existing), "--server", "http://a"]) == 0
    assert sorted(p.name for p in existing.iterdir()) == [
        "intro.pdf",
        "keep.txt",
        "letters",
        "reports",
    ]
    capsys.readouterr()


def test_the_job_commands(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> int:
        return commands.main([*args, "--server", "http://a"])

    assert run("retry", JOB) == EXIT_OK
    assert capsys.readouterr().out == f"Job {JOB} IN_PROGRESS: 2 files queued again\n"
    assert run("cancel", JOB) == EXIT_ERROR
    assert capsys.readouterr().err == (
        f"quire: error: 409 Conflict: Job {JOB} has already ended.\n"
    )
    assert run("delete", JOB) == EXIT_OK
    assert capsys.readouterr().out == f"Job {JOB} deleted\n"
    assert run("list") == EXIT_OK
    assert capsys.readouterr().out.split() == [
        JOB,
        "COMPLETED",
        "3/3",
        "files",
        "2026-12-06",
        "05:00",
    ]
    assert [f"{r.method} {r.url.path}" for r in api.requests] == [
        f"POST /api/v1/jobs/{JOB}/retry",
        f"POST /api/v1/jobs/{JOB}/cancel",
        f"DELETE /api/v1/jobs/{JOB}",
        "GET /api/v1/jobs",
    ]
