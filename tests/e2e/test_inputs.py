"""End to end, on the embedded default: .doc, .rtf and .odt inputs (issue #18 item 3), in a
zip and as ``files`` parts, converted by the real, sandboxed LibreOffice; each bad one FAILED
with its own message, beside the ones that convert."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CORPUS
from tests.docx_factory import make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import embedded_env
from tests.pdf import pdf_pages

pytestmark = pytest.mark.e2e


def test_doc_rtf_and_odt_inputs_convert_and_bad_ones_fail_each_with_its_reason(
    make_service: Callable[[dict[str, str]], Service], legacy_documents: dict[str, Path]
) -> None:
    service = make_service(embedded_env())
    service.start()
    odt = legacy_documents["odt"].read_bytes()
    entries = {
        "old/letter.doc": legacy_documents["doc"].read_bytes(),
        "old/letter.rtf": legacy_documents["rtf"].read_bytes(),
        "old/letter.odt": odt,
        "old/letter.docx": legacy_documents["docx"].read_bytes(),
        "saved-as.doc": legacy_documents["docx"].read_bytes(),  # a .docx under a .doc name
        "locked.doc": legacy_documents["encrypted-doc"].read_bytes(),
        "locked.docx": (CORPUS / "encrypted" / "tests__inputs__example_password.docx").read_bytes(),
        "cut.odt": odt[: len(odt) // 2],
        "notes.rtf": b"not really rtf",
        "readme.txt": b"left out",
    }
    created = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", make_zip(entries), "application/zip")},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    job = service.wait_for_job(created.json()["job_id"])
    files: Any = {file["filename"]: file for file in job["files"]}  # type: ignore[attr-defined]
    assert set(files) == set(entries) - {"readme.txt"}
    for name in ("old/letter.doc", "old/letter.rtf", "old/letter.odt", "saved-as.doc"):
        assert files[name]["status"] == "COMPLETED", files[name]
    # The unique-name logic holds across kinds: one stem, four PDFs.
    outputs = sorted(
        files[f"old/letter.{kind}"]["output_name"] for kind in ("doc", "docx", "odt", "rtf")
    )
    assert outputs == [
        "old/letter (2).pdf",
        "old/letter (3).pdf",
        "old/letter (4).pdf",
        "old/letter.pdf",
    ]
    assert files["saved-as.doc"]["output_name"] == "saved-as.pdf"
    messages = {
        "locked.doc": "password-protected (encrypted) Word 97-2003 document (.doc)",
        "locked.docx": "password-protected (encrypted) Word document: Office stores a .docx",
        "cut.odt": "damaged or truncated OpenDocument text (.odt)",
        "notes.rtf": "The file is not an RTF document",
    }
    for name, message in messages.items():
        assert files[name]["status"] == "FAILED" and message in files[name]["error_message"], name

    # The PDFs hold the document's text, whatever the kind it came as.
    download = httpx.get(str(job["download_url"]), follow_redirects=True, timeout=60)
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        texts = {name: " ".join(pdf_pages(archive.read(name))) for name in outputs}
    assert len(texts) == 4 and all("Some" in text for text in texts.values()), texts

    # As 'files' parts too.
    parts = [
        (
            "files",
            (f"letter.{kind}", legacy_documents[kind].read_bytes(), "application/octet-stream"),
        )
        for kind in ("doc", "rtf", "odt")
    ]
    created = httpx.post(f"{service.url}/api/v1/jobs", files=parts, timeout=60)
    assert created.status_code == 202, created.text
    job = service.wait_for_job(created.json()["job_id"])
    assert job["status"] == "COMPLETED", job
    assert sorted(file["output_name"] for file in job["files"]) == [  # type: ignore[attr-defined]
        "letter (2).pdf",
        "letter (3).pdf",
        "letter.pdf",
    ]
