"""The whole service converts macro-enabled documents and runs none of their macros.

A .docm and a .doc carrying a real VBA project (tests/vba_docs.py), whose AutoOpen and
Document_Open write into the temporary folder of the LibreOffice instance that runs them (in
its profile, where the sandbox lets it write) and append text to the document.
tests/workers/test_vba_macros.py holds the control: a stock LibreOffice runs both.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docx_factory import make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import embedded_env
from tests.pdf import pdf_pages
from tests.vba_docs import INSTANCE_TEMP, MARKS, doc_with_macros, docm, marking_macros

pytestmark = pytest.mark.e2e

TEXT = "the text of a macro-enabled document"
INSERTED = "INSERTED-BY-A-MACRO"


def test_macro_enabled_documents_convert_and_no_macro_runs(
    make_service: Callable[[dict[str, str]], Service], legacy_documents: dict[str, Path]
) -> None:
    service = make_service(embedded_env())
    service.start()
    modules = marking_macros(INSTANCE_TEMP, INSERTED)
    entries = {
        "macros.docm": docm(TEXT, modules),
        "macros.doc": doc_with_macros(legacy_documents["doc"], modules),
    }
    created = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", make_zip(entries), "application/zip")},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    job = service.wait_for_job(created.json()["job_id"])
    files: Any = {file["filename"]: file for file in job["files"]}  # type: ignore[attr-defined]
    assert {name: file["status"] for name, file in files.items()} == {
        "macros.docm": "COMPLETED",
        "macros.doc": "COMPLETED",
    }, files

    download = httpx.get(str(job["download_url"]), follow_redirects=True, timeout=60)
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        texts = {
            name: " ".join(pdf_pages(archive.read(files[name]["output_name"]))) for name in entries
        }
    assert TEXT in texts["macros.docm"]
    assert "Some" in texts["macros.doc"]  # the corpus document's text, as tests/e2e/test_inputs
    assert not any(INSERTED in text for text in texts.values())
    # The workers' instances are still running: their profiles (and temporary folders) are
    # all under the data directory.
    instances = list((service.data_dir / "libreoffice").glob("lo-*"))
    assert instances
    assert [path for path in service.data_dir.rglob("*") if path.name in MARKS] == []
