"""Only real DOCX packages reach LibreOffice; anything else gets a message a person understands."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import File, FileStatus
from app.storage import get_store, upload_key
from app.zipinput import list_docx_entries
from tests.conftest import CORPUS, Backend, SentTasks
from tests.docx_factory import bad_documents, make_docx, make_zip
from tests.hostile_inputs import docx_with_bombs
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice.uno import UnoConverter
from workers.validation import InvalidDocument, validate_docx

EXPECTED_MESSAGES = {
    "empty.docx": "empty (0 bytes)",
    "plain-text.docx": "not a zip package",
    "random-bytes.docx": "not a zip package",
    "truncated.docx": "damaged or truncated",
    "legacy-word.docx": "damaged or truncated Word 97-2003 document (.doc)",
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


# -- bombs: parts that expand far beyond their compressed size -------------------------------

GiB = 1024 * 1024 * 1024


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, int], None]]:
    def apply(part: int, package: int) -> None:
        monkeypatch.setenv("QUIRE_MAX_PART_EXPANDED_BYTES", str(part))
        monkeypatch.setenv("QUIRE_MAX_PACKAGE_EXPANDED_BYTES", str(package))
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def test_a_part_that_expands_to_a_gigabyte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_with_bombs(GiB))
    assert path.stat().st_size < 2 * 1024 * 1024  # 1 MiB on disk
    with pytest.raises(InvalidDocument) as caught:
        validate_docx(path)
    assert str(caught.value) == (
        "The DOCX package's part word/media/bomb0.bin expands to more than 256 MiB "
        "(QUIRE_MAX_PART_EXPANDED_BYTES): a compressed bomb, or far larger than any document "
        "Word writes; refused."
    )


def test_parts_each_small_enough_are_refused_together(
    tmp_path: Path, limits: Callable[[int, int], None]
) -> None:
    limits(4 * 1024 * 1024, 8 * 1024 * 1024)
    path = tmp_path / "bombs.docx"
    path.write_bytes(docx_with_bombs(*[3 * 1024 * 1024] * 3))
    with pytest.raises(InvalidDocument, match="expands to more than 8 MiB in all"):
        validate_docx(path)
    path.write_bytes(docx_with_bombs(3 * 1024 * 1024, 3 * 1024 * 1024))
    validate_docx(path)  # under both limits


def test_the_part_limit_is_a_setting(tmp_path: Path, limits: Callable[[int, int], None]) -> None:
    limits(2 * 1024 * 1024, 64 * 1024 * 1024)
    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_with_bombs(3 * 1024 * 1024))
    with pytest.raises(InvalidDocument, match=r"bomb0\.bin expands to more than 2 MiB"):
        validate_docx(path)


def test_a_job_with_a_docx_that_expands_to_gigabytes_fails_that_file_only(
    backend: Backend, sent: SentTasks, module_converter: UnoConverter
) -> None:
    # Three parts of 512 MiB: 1.5 GiB in all from 1.5 MB on disk.
    entries = {"bomb.docx": docx_with_bombs(*[512 * 1024 * 1024] * 3), "ok.docx": make_docx("ok")}
    job_id = new_job_id()
    zip_bytes = make_zip(entries, zipfile.ZIP_STORED)  # the outer zip must not give it away
    settings, store = get_settings(), get_store()
    store.put_bytes(upload_key(job_id), zip_bytes, "application/zip")
    with store.open_reader(upload_key(job_id)) as source:
        listed = list_docx_entries(source, settings.max_files_per_job)
    with session_scope() as session:
        create_job(session, JobSpec(job_id, len(zip_bytes)), listed)
    ingest_job(job_id, store, settings)
    for file_id in sent.conversions:
        convert_file(file_id, store, module_converter, settings)
    with session_scope() as session:
        files = {f.filename: f for f in session.scalars(select(File).where(File.job_id == job_id))}
    assert files["ok.docx"].status == FileStatus.COMPLETED
    assert files["bomb.docx"].status == FileStatus.FAILED
    assert files["bomb.docx"].error_message == (
        "The DOCX package's part word/media/bomb0.bin expands to more than 256 MiB "
        "(QUIRE_MAX_PART_EXPANDED_BYTES): a compressed bomb, or far larger than any document "
        "Word writes; refused."
    )
