"""The benchmark documents convert, with real LibreOffice, to exactly the pages they promise."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader

from tests.bench.documents import NON_LATIN, bench_docx, header_text, marker
from tests.pdf import pdf_pages
from workers.libreoffice.uno import UnoConverter
from workers.validation import validate_docx


def test_a_bench_document_converts_to_its_pages(converter: UnoConverter, tmp_path: Path) -> None:
    source, target = tmp_path / "bench.docx", tmp_path / "bench.pdf"
    source.write_bytes(bench_docx(3, 2))
    validate_docx(source)
    converter.convert(source, target, timeout=60)
    data = target.read_bytes()
    pages = pdf_pages(data)
    assert len(pages) == 2
    for number, text in enumerate(pages, start=1):
        assert marker(3, number) in text
        assert header_text(3) in text
        assert NON_LATIN["greek"] in text
        assert NON_LATIN["cyrillic"] in text
    assert marker(3, 2) not in pages[0]
    assert PdfReader(io.BytesIO(data)).pages[0].images
