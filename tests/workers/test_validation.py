"""Only real DOCX packages reach LibreOffice; anything else gets a message a person understands."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CORPUS
from tests.docx_factory import bad_documents, make_docx
from workers.validation import InvalidDocument, validate_docx

EXPECTED_MESSAGES = {
    "empty.docx": "empty (0 bytes)",
    "plain-text.docx": "not a zip package",
    "random-bytes.docx": "not a zip package",
    "truncated.docx": "damaged or truncated",
    "legacy-word.docx": "legacy Word .doc",
    "no-main-part.docx": "main document part 'word/document.xml' is missing",
    "no-content-types.docx": "no [Content_Types].xml",
    "spreadsheet.docx": "not a Word document",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_bad_documents_are_refused_with_a_reason(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(bad_documents()[name])
    with pytest.raises(InvalidDocument) as caught:
        validate_docx(path)
    assert EXPECTED_MESSAGES[name] in str(caught.value)


def test_a_generated_docx_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.docx"
    path.write_bytes(make_docx("hello"))
    validate_docx(path)


def test_main_part_is_found_through_the_relationship(corpus: Callable[[str], Path]) -> None:
    # pandoc's test file keeps its main part away from word/document.xml.
    validate_docx(corpus("test__docx__alternate_document_path.docx"))


def test_encrypted_docx_from_the_corpus_is_refused() -> None:
    encrypted = sorted((CORPUS / "encrypted").glob("*_password.docx"))
    assert len(encrypted) == 2
    for path in sorted((CORPUS / "encrypted").glob("*_password.docx")):
        with pytest.raises(InvalidDocument, match="password-protected"):
            validate_docx(path)


def test_every_unencrypted_corpus_document_is_valid() -> None:
    refused = []
    for path in sorted(CORPUS.rglob("*.docx")):
        try:
            validate_docx(path)
        except InvalidDocument as error:
            refused.append((path.name, str(error)))
    # The only refusals are the password-protected ones (OLE2 containers).
    assert refused, "the corpus should hold some encrypted documents"
    assert all("password" in name and "password-protected" in why for name, why in refused)


def test_corrupted_part_inside_a_docx_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_docx("some text that will be corrupted " * 50))
    # Flip bytes inside the compressed document part (after the first local headers).
    middle = len(data) // 2
    data[middle : middle + 8] = b"\xff" * 8
    path = tmp_path / "corrupt.docx"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDocument):
        validate_docx(path)


def test_an_unsupported_compression_method_is_refused_with_a_reason(tmp_path: Path) -> None:
    data = bytearray(make_docx("deflate64, say"))
    # Mark every entry as Deflate64 (method 9), which zipfile cannot read, in the local headers
    # (method at offset 8) and the central directory (offset 10).
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        position = data.find(signature)
        while position >= 0:
            data[position + offset : position + offset + 2] = (9).to_bytes(2, "little")
            position = data.find(signature, position + 4)
    path = tmp_path / "deflate64.docx"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDocument, match="compression method"):
        validate_docx(path)


def test_a_doctype_in_the_main_part_is_refused(tmp_path: Path) -> None:
    data = make_docx("entity")
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "word/document.xml":
                body = body.replace(
                    b"<w:document",
                    b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><w:document',
                    1,
                )
            package.writestr(info, body)
    path = tmp_path / "doctype.docx"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InvalidDocument, match="DOCTYPE"):
        validate_docx(path)
