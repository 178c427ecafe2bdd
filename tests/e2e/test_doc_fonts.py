"""End to end, on the embedded default: Word 97-2003 .doc files made by LibreOffice itself get
their font report in the status document (issue #18 item 1), and one whose font table cannot
be read converts all the same, without a report."""

from __future__ import annotations

import struct
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
from workers.ole2 import CompoundFile

pytestmark = pytest.mark.e2e

CALIBRI = {"Calibri": {"used": "Carlito", "metric_compatible": True}}
FIB_LCB_STTBF_FFN = 0x116  # MS-DOC: the FIB's lcbSttbfFfn, the font table's size


def with_lying_font_table(doc: Path) -> bytes:
    """The .doc with its FIB saying the font table is 2 GiB long. Found by the 64 bytes of
    the WordDocument stream that hold it, as the file holds them (the stream may lie in the
    mini stream, whose sectors need not follow each other)."""
    with open(doc, "rb") as handle:
        compound = CompoundFile(handle)
        word = compound.read_stream("WordDocument", compound.entries["WordDocument"].size)
    start = FIB_LCB_STTBF_FFN // 64 * 64
    block = word[start : start + 64]
    data = bytearray(doc.read_bytes())
    assert data.count(block) == 1
    struct.pack_into("<I", data, data.index(block) + FIB_LCB_STTBF_FFN - start, 0x7FFFFFF0)
    return bytes(data)


def test_doc_files_get_their_font_report(
    make_service: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    docs = saved_by_libreoffice(
        {
            "calibri": fonts_docx(latin("Calibri", "Text in Calibri")),
            "nobody": fonts_docx(latin(NOBODY, "Text in a font nobody has")),
        },
        "doc",
        tmp_path / "docs",
    )
    service = make_service(embedded_env())
    service.start()
    documents = {
        "letters/calibri.doc": docs["calibri"].read_bytes(),
        "letters/nobody.doc": docs["nobody"].read_bytes(),
        "letters/lying.doc": with_lying_font_table(docs["calibri"]),
    }
    created = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("letters.zip", make_zip(documents), "application/zip")},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    job = service.wait_for_job(created.json()["job_id"])
    assert job["status"] == "COMPLETED", job
    files: Any = {file["filename"]: file for file in job["files"]}  # type: ignore[attr-defined]
    assert {name: file["status"] for name, file in files.items()} == dict.fromkeys(
        documents, "COMPLETED"
    )
    assert files["letters/calibri.doc"]["fonts"] == {"substituted": CALIBRI, "missing": []}
    # LibreOffice saves its default font, Calibri, as the Normal style's: the .doc asks for it.
    assert files["letters/nobody.doc"]["fonts"] == {"substituted": CALIBRI, "missing": [NOBODY]}
    # LibreOffice converts it; the report, which cannot read its font table, is not made.
    assert files["letters/lying.doc"]["fonts"] is None
    assert job["fonts"] == {"files_with_substitutions": 2, "files_with_missing_fonts": 1}
