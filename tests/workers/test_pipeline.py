"""Ingest, conversion and archive as plain functions, on both backends, with real LibreOffice.

The broker is the one fake: the ``sent`` fixture records what would have been queued, and the
test delivers it, including twice, as Redis may.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.config import get_settings
from app.db import session_scope
from app.jobs import get_job_view
from app.models import File, FileStatus, Job, JobStatus
from app.storage import get_store, result_key
from tests.conftest import Backend, SentTasks
from tests.docx_factory import bad_documents, make_docx, make_zip
from tests.pdf import pdf_pages
from tests.workers.helpers import files_by_name, result_members, run_to_the_end, submit
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import Converter
from workers.libreoffice.uno import UnoConverter


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def test_mixed_job_gives_per_file_results_and_one_archive(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    entries = {
        "top.docx": make_docx("Top level text", "Second page"),
        "nested/deeper/report.docx": make_docx("Nested report"),
        "other/report.docx": make_docx("Other report"),
        **{f"bad/{name}": data for name, data in bad_documents().items()},
    }
    job_id = submit(make_zip(entries))
    run_to_the_end(job_id, sent, converter)

    with session_scope() as session:
        view = get_job_view(session, job_id)
    assert view is not None
    assert view.job.status == JobStatus.COMPLETED
    statuses = {file.filename: file.status for file in view.files}
    assert statuses["top.docx"] == FileStatus.COMPLETED
    assert statuses["nested/deeper/report.docx"] == FileStatus.COMPLETED
    assert statuses["other/report.docx"] == FileStatus.COMPLETED
    for name in bad_documents():
        assert statuses[f"bad/{name}"] == FileStatus.FAILED, name
    assert all(file.error_message for file in view.files if file.status == FileStatus.FAILED)

    members = result_members(job_id)
    assert sorted(members) == ["nested/deeper/report.pdf", "other/report.pdf", "top.pdf"]
    top = pdf_pages(members["top.pdf"])
    assert len(top) == 2 and "Top level text" in top[0] and "Second page" in top[1]
    assert "Nested report" in pdf_pages(members["nested/deeper/report.pdf"])[0]
    assert view.job.result_bytes == get_store().size(result_key(job_id))


def test_redelivered_tasks_count_once_and_archive_once(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    job_id = submit(make_zip({"a.docx": make_docx("A"), "b.docx": make_docx("B")}))
    settings, store = get_settings(), get_store()
    ingest_job(job_id, store, settings)
    ingest_job(job_id, store, settings)  # a redelivered ingest copies and queues nothing again
    assert len(sent.conversions) == 2
    for file_id in list(sent.conversions) * 2:  # every conversion delivered twice
        convert_file(file_id, store, converter, settings)
    assert len(sent.archives) == 1  # exactly one caller claimed the archive
    build_archive(job_id, store)
    build_archive(job_id, store)  # a redelivered archive task does nothing
    with session_scope() as session:
        attempts = session.scalars(select(File.attempts).where(File.job_id == job_id)).all()
        job = session.get(Job, job_id)
    assert attempts == [1, 1]  # the second delivery found the files finished and did nothing
    assert job is not None and job.status == JobStatus.COMPLETED
    assert sorted(result_members(job_id)) == ["a.pdf", "b.pdf"]


def test_job_with_nothing_convertible_fails_with_a_job_message(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    job_id = submit(make_zip({"x.docx": b"", "y.docx": b"plain text"}))
    run_to_the_end(job_id, sent, converter)
    with session_scope() as session:
        job = session.get(Job, job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error_message and "No file could be converted" in job.error_message
    assert not get_store().exists(result_key(job_id))


def test_entries_past_the_size_or_ratio_limits_fail_and_the_rest_convert(
    backend: Backend, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "max_entry_bytes", 200_000)
    bomb = b"\0" * 5_000_000  # deflates about 1000:1 and unpacks past the size limit
    job_id = submit(make_zip({"bomb.docx": bomb, "ok.docx": make_docx("survivor")}))
    run_to_the_end(job_id, sent, converter)
    with session_scope() as session:
        view = get_job_view(session, job_id)
    assert view is not None
    by_name = {file.filename: file for file in view.files}
    assert by_name["bomb.docx"].status == FileStatus.FAILED
    assert "limit" in (by_name["bomb.docx"].error_message or "")
    assert by_name["ok.docx"].status == FileStatus.COMPLETED
    assert view.job.status == JobStatus.COMPLETED


def test_compression_ratio_limit(
    backend: Backend, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "max_compression_ratio", 20.0)
    job_id = submit(make_zip({"ratio.docx": b"A" * 2_000_000, "ok.docx": make_docx("fine")}))
    run_to_the_end(job_id, sent, converter)
    files = files_by_name(job_id)
    assert files["ratio.docx"].status == FileStatus.FAILED
    assert "compression ratio" in (files["ratio.docx"].error_message or "")
    assert files["ok.docx"].status == FileStatus.COMPLETED


def test_encrypted_zip_entries_fail_with_a_message(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    data = bytearray(
        make_zip(
            {"locked.docx": make_docx("secret"), "open.docx": make_docx("o")},
            compression=zipfile.ZIP_STORED,
        )
    )
    # Set the "encrypted" flag of the first entry, in its local and central headers: the bytes
    # are then unreadable without a password, as in a zip made with `zip -e`.
    # (The stored DOCX holds headers of its own: search the outer central directory only.)
    central = zipfile.ZipFile(io.BytesIO(bytes(data))).start_dir
    data[6] |= 0x1  # the first local header is at offset 0
    data[data.find(b"PK\x01\x02", central) + 8] |= 0x1
    job_id = submit(bytes(data))
    run_to_the_end(job_id, sent, converter)
    files = files_by_name(job_id)
    assert files["locked.docx"].status == FileStatus.FAILED
    assert "encrypted" in (files["locked.docx"].error_message or "")
    assert files["open.docx"].status == FileStatus.COMPLETED


def test_corpus_documents_convert_through_the_pipeline(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    from tests.conftest import CORPUS

    chosen = sorted((CORPUS / "pandoc").glob("test__docx__*.docx"))[:12]
    job_id = submit(make_zip({path.name: path.read_bytes() for path in chosen}))
    run_to_the_end(job_id, sent, converter)
    with session_scope() as session:
        completed = session.scalar(
            select(func.count())
            .select_from(File)
            .where(File.job_id == job_id, File.status == FileStatus.COMPLETED)
        )
    assert completed == len(chosen)
    members = result_members(job_id)
    assert len(members) == len(chosen)
    assert all(pdf_pages(data) for data in members.values())


def test_hostile_entry_names_stay_data(
    backend: Backend, sent: SentTasks, converter: Converter, tmp_path: Path
) -> None:
    """Traversal, absolute paths, backslashes, drive letters, duplicates, legacy encodings and
    symlinks: every name is data; nothing is written outside the store and scratch."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate: wanted
        for name, text in [
            ("../../escape.docx", "traversal"),
            ("/etc/absolute.docx", "absolute"),
            ("C:\\Users\\me\\drive.docx", "drive letter"),
            ("dup.docx", "first of two"),
            ("dup.docx", "second of two"),
        ]:
            archive.writestr(name, make_docx(text))
        legacy = zipfile.ZipInfo("x")
        legacy.filename = b"caf\x82.docx".decode("cp437")  # a CP437 name, no UTF-8 flag
        archive.writestr(legacy, make_docx("legacy name"))
        link = zipfile.ZipInfo("link.docx")
        link.external_attr = 0o120777 << 16  # a symlink entry: skipped
        archive.writestr(link, "/etc/passwd")
    job_id = submit(buffer.getvalue())
    run_to_the_end(job_id, sent, converter)
    members = result_members(job_id)
    assert sorted(members) == sorted(
        [
            "escape.pdf",
            "etc/absolute.pdf",
            "Users/me/drive.pdf",
            "dup.pdf",
            "dup (2).pdf",
            "caf\u00e9.pdf",
        ]
    )
    assert "second of two" in pdf_pages(members["dup (2).pdf"])[0]
    for outside in (tmp_path.parent / "escape.pdf", Path("/etc/absolute.pdf")):
        assert not outside.exists()


def test_a_document_of_hundreds_of_pages_converts(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    pages = [f"Page {n} of a long report" for n in range(1, 301)]
    job_id = submit(make_zip({"long.docx": make_docx(*pages), "short.docx": make_docx("s")}))
    run_to_the_end(job_id, sent, converter)
    texts = pdf_pages(result_members(job_id)["long.pdf"])
    assert len(texts) == 300 and "Page 300 of a long report" in texts[-1]


def test_a_file_that_keeps_killing_its_worker_is_failed_after_max_attempts(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    from sqlalchemy import update

    job_id = submit(make_zip({"poison.docx": make_docx("x"), "fine.docx": make_docx("fine")}))
    settings, store = get_settings(), get_store()
    ingest_job(job_id, store, settings)
    with session_scope() as session:
        poison = session.scalar(select(File.id).where(File.filename == "poison.docx"))
        # As if its conversion had been started max_attempts times and its worker died each time.
        session.execute(
            update(File).where(File.id == poison).values(attempts=settings.max_attempts)
        )
    while sent.conversions:
        convert_file(sent.conversions.pop(0), store, converter, settings)
    files = files_by_name(job_id)
    assert files["poison.docx"].status == FileStatus.FAILED
    assert "started 3 times and never finished" in (files["poison.docx"].error_message or "")
    assert files["fine.docx"].status == FileStatus.COMPLETED
    assert sent.archives == [job_id]
