"""End to end, on the embedded default: the font report of .odt and .rtf files, made by
LibreOffice itself, in the status document and the job's counts (issue #18 item 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docx_factory import make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import embedded_env
from tests.font_docs import NOBODY, fonts_docx, latin
from tests.saved_documents import saved_by_libreoffice

pytestmark = pytest.mark.e2e

CALIBRI = {"Calibri": {"used": "Carlito", "metric_compatible": True}}


def test_odt_and_rtf_files_get_their_font_report(
    make_service: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    odt = saved_by_libreoffice(
        {"calibri": fonts_docx(latin("Calibri", "Text in Calibri"))}, "odt", tmp_path / "odt"
    )["calibri"]
    rtf = saved_by_libreoffice(
        {"nobody": fonts_docx(latin(NOBODY, "Text in a font nobody has"))}, "rtf", tmp_path / "rtf"
    )["nobody"]
    service = make_service(embedded_env())
    service.start()
    batch = make_zip({"letters/calibri.odt": odt.read_bytes(), "nobody.rtf": rtf.read_bytes()})
    created = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", batch, "application/zip")},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    job = service.wait_for_job(created.json()["job_id"])
    assert job["status"] == "COMPLETED", job
    files: Any = {file["filename"]: file for file in job["files"]}  # type: ignore[attr-defined]
    assert {name: file["status"] for name, file in files.items()} == {
        "letters/calibri.odt": "COMPLETED",
        "nobody.rtf": "COMPLETED",
    }
    assert files["letters/calibri.odt"]["fonts"] == {"substituted": CALIBRI, "missing": []}
    # LibreOffice saved the DOCX's default font (Calibri: Word's, when a DOCX names none) as
    # the RTF's \deff and Normal style: the RTF asks for it too.
    assert files["nobody.rtf"]["fonts"] == {"substituted": CALIBRI, "missing": [NOBODY]}
    assert job["fonts"] == {"files_with_substitutions": 2, "files_with_missing_fonts": 1}
    assert service.stop() == 0
