"""End to end, on the embedded default: the font report in the status document and the event
stream, the job's counts, strict_fonts as a form field and in a JSON body, and a font in
QUIRE_FONTS_DIR embedded by the real, sandboxed LibreOffice (issue #18 items 1 and 2)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from tests.docx_factory import make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import embedded_env
from tests.font_docs import (
    ADDED_FAMILY,
    ADDED_POSTSCRIPT,
    NOBODY,
    Run,
    added_font,
    fonts_docx,
    latin,
)

pytestmark = pytest.mark.e2e

CALIBRI = {"Calibri": {"used": "Carlito", "metric_compatible": True}}
DOCUMENTS = {
    "calibri.docx": fonts_docx(latin("Calibri", "Text in Calibri")),
    "nobody.docx": fonts_docx(latin(NOBODY, "Text in a font nobody has")),
    "chinese.docx": fonts_docx(
        Run(
            "你好世界。这是一段中文文本。",
            {"ascii": "SimSun", "hAnsi": "SimSun", "eastAsia": "SimSun"},
            east_asian_language="zh-CN",
        )
    ),
    "added.docx": fonts_docx(latin(ADDED_FAMILY, "Text in the operator's font")),
}


def events_of(service: Service, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's server-sent events, read until the job event (the stream ends there)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with httpx.stream("GET", f"{service.url}/api/v1/jobs/{job_id}/events", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    return events


def font_names(pdf: bytes) -> set[str]:
    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        resources: Any = page["/Resources"]
        for font in resources.get_object()["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]).lstrip("/").split("+", 1)[-1])
    return names


def test_font_reports_counts_strict_fonts_and_an_added_font(
    make_service: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    fonts_dir = added_font(tmp_path / "fonts")
    service = make_service({**embedded_env(), "QUIRE_FONTS_DIR": str(fonts_dir)})
    service.start()

    # A zip, no option: every file converts, each with its report.
    created = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", make_zip(DOCUMENTS), "application/zip")},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    events = events_of(service, job_id)
    job = service.wait_for_job(job_id)
    assert job["status"] == "COMPLETED", job
    files: Any = {file["filename"]: file for file in job["files"]}  # type: ignore[attr-defined]
    assert {name: file["status"] for name, file in files.items()} == dict.fromkeys(
        DOCUMENTS, "COMPLETED"
    )
    assert files["calibri.docx"]["fonts"] == {"substituted": CALIBRI, "missing": []}
    assert files["nobody.docx"]["fonts"] == {"substituted": {}, "missing": [NOBODY]}
    chinese = files["chinese.docx"]["fonts"]
    assert chinese["missing"] == [] and chinese["substituted"]["SimSun"]["used"].startswith(
        "Noto Serif CJK"
    )
    # The operator's font: installed as far as the report goes, and embedded in the PDF.
    assert files["added.docx"]["fonts"] == {"substituted": {}, "missing": []}
    pdf = httpx.get(files["added.docx"]["download_url"], follow_redirects=True, timeout=60)
    assert ADDED_POSTSCRIPT in font_names(pdf.content)
    assert job["fonts"] == {"files_with_substitutions": 2, "files_with_missing_fonts": 1}

    # The event stream says the same: each COMPLETED file's report, the counts at the end.
    streamed = {
        data["filename"]: data["fonts"]
        for name, data in events
        if name == "file" and data["status"] == "COMPLETED"
    }
    assert streamed == {name: file["fonts"] for name, file in files.items()}
    assert events[-1][0] == "job" and events[-1][1]["fonts"] == job["fonts"]

    # strict_fonts as a form field beside the DOCX files: the missing font fails its file.
    strict = httpx.post(
        f"{service.url}/api/v1/jobs",
        files=[
            ("files", ("calibri.docx", DOCUMENTS["calibri.docx"], "application/octet-stream")),
            ("files", ("nobody.docx", DOCUMENTS["nobody.docx"], "application/octet-stream")),
        ],
        data={"strict_fonts": "true"},
        timeout=60,
    )
    assert strict.status_code == 202, strict.text
    strict_job = service.wait_for_job(strict.json()["job_id"])
    check_strict(strict_job)

    # ... and in a JSON body, after a direct upload.
    data = make_zip({name: DOCUMENTS[name] for name in ("calibri.docx", "nobody.docx")})
    offer = httpx.post(f"{service.url}/api/v1/uploads", json={"size": len(data)}, timeout=30)
    assert offer.status_code == 201, offer.text
    upload = offer.json()
    put = httpx.put(upload["url"], content=data, headers=upload["headers"], timeout=60)
    assert put.status_code == 200, put.text
    submitted = httpx.post(
        f"{service.url}/api/v1/jobs",
        json={"upload_id": upload["upload_id"], "strict_fonts": True},
        timeout=60,
    )
    assert submitted.status_code == 202, submitted.text
    check_strict(service.wait_for_job(submitted.json()["job_id"]))
    assert service.stop() == 0


def check_strict(job: dict[str, Any]) -> None:
    assert job["options"]["strict_fonts"] is True
    files = {file["filename"]: file for file in job["files"]}
    assert files["calibri.docx"]["status"] == "COMPLETED"
    assert files["calibri.docx"]["fonts"] == {"substituted": CALIBRI, "missing": []}
    assert files["nobody.docx"]["status"] == "FAILED"
    assert files["nobody.docx"]["fonts"] is None
    message = files["nobody.docx"]["error_message"]
    assert NOBODY in message and "strict_fonts" in message
    assert job["fonts"] == {"files_with_substitutions": 1, "files_with_missing_fonts": 0}
