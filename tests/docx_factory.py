"""Test documents: minimal valid DOCX packages with known text, and bad files of each kind."""

from __future__ import annotations

import io
import os
import zipfile
from xml.sax.saxutils import escape

CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/{main}" ContentType="{content_type}"/>
</Types>"""

ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="{office_document}" Target="{main}"/>
</Relationships>"""

OFFICE_DOCUMENT = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
)
WORD_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
SHEET_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PAGE_BREAK = '<w:p><w:r><w:br w:type="page"/></w:r></w:p>'


def root_rels(main: str) -> str:
    return ROOT_RELS.format(main=main, office_document=OFFICE_DOCUMENT)


def document_xml(pages: list[str]) -> str:
    """One paragraph of text per page, separated by hard page breaks."""
    body = PAGE_BREAK.join(
        f'<w:p><w:r><w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>' for text in pages
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>'
    )


def make_docx(*pages: str, main: str = "word/document.xml", content_type: str = WORD_MAIN) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(
            "[Content_Types].xml", CONTENT_TYPES.format(main=main, content_type=content_type)
        )
        package.writestr("_rels/.rels", root_rels(main))
        package.writestr(main, document_xml(list(pages) or ["empty"]))
    return buffer.getvalue()


def docx_without_main_part() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr(
            "[Content_Types].xml",
            CONTENT_TYPES.format(main="word/document.xml", content_type=WORD_MAIN),
        )
        package.writestr(
            "_rels/.rels",
            root_rels("word/document.xml"),
        )
    return buffer.getvalue()


def spreadsheet_renamed() -> bytes:
    return make_docx("cells", main="xl/workbook.xml", content_type=SHEET_MAIN)


def zip_without_content_types() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr("word/document.xml", document_xml(["orphan"]))
    return buffer.getvalue()


OLE2_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504


def bad_documents() -> dict[str, bytes]:
    """One file per kind of bad input a user may send, by a descriptive name."""
    good = make_docx("truncated soon")
    return {
        "empty.docx": b"",
        "plain-text.docx": b"This is just text, renamed to .docx.\n" * 20,
        "random-bytes.docx": os.urandom(4096),
        "truncated.docx": good[: len(good) // 2],
        "legacy-word.docx": OLE2_HEADER + os.urandom(2048),
        "no-main-part.docx": docx_without_main_part(),
        "no-content-types.docx": zip_without_content_types(),
        "spreadsheet.docx": spreadsheet_renamed(),
    }


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()
