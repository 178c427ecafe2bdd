"""The merged PDF of a job (``merge=true``): its pages, bookmarks and failure pages, and its
place in the archive's lifecycle (retry, delete, a worker dying while it is written).

Read back with pypdf, in strict mode: the file is written by Quire's own writer
(workers/merge.py), so its structure is under test as much as its content.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select, update

from app.config import get_settings
from app.db import session_scope
from app.models import File, FileStatus, Job, JobStatus, utcnow
from app.services import job_actions
from app.storage import LocalStore, get_store, input_key, merged_key, output_key
from tests.bench.merge_probe import probe_job
from tests.conftest import Backend, SentTasks
from tests.docx_factory import bad_documents, make_docx, make_zip
from tests.workers.helpers import files_by_name, run_to_the_end, submit
from workers import merge
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import Converter, FakeConverter, minimal_pdf
from workers.libreoffice.uno import UnoConverter
from workers.merge import (
    FAILURE_BOOKMARK,
    LINE_CHARS,
    LINES_PER_PAGE,
    LeftOut,
    MergeSource,
    failure_pages,
    write_merged,
)
from workers.sweeper import resend_unleased

TABLES = "test__docx__tables.docx"  # tables in three fonts
LISTS = "test__docx__lists.docx"


def merged_reader(job_id: str) -> PdfReader:
    data = b"".join(get_store().iter_chunks(merged_key(job_id)))
    return PdfReader(io.BytesIO(data), strict=True)


def bookmarks(reader: PdfReader) -> list[tuple[str, int | None]]:
    """(title, page index) of each top-level bookmark, in order."""
    found = []
    for item in reader.outline:
        assert not isinstance(item, list)  # one level: no nested bookmarks
        found.append((str(item.title), reader.get_destination_page_number(item)))
    return found


def page_text(reader: PdfReader, index: int) -> str:
    return " ".join((reader.pages[index].extract_text() or "").split())


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def completed_in_order(job_id: str) -> list[File]:
    with session_scope() as session:
        rows = session.scalars(
            select(File)
            .where(File.job_id == job_id, File.status == FileStatus.COMPLETED)
            .order_by(File.position)
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def own_pdf(job_id: str, file: File) -> PdfReader:
    data = b"".join(get_store().iter_chunks(output_key(job_id, file.id)))
    return PdfReader(io.BytesIO(data))


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def test_a_merged_job_has_every_files_pages_in_zip_order_a_bookmark_each_and_its_failures(
    backend: Backend,
    sent: SentTasks,
    converter: Converter,
    corpus: Callable[[str], Path],
) -> None:
    # Zip order is not alphabetical order: the merged PDF follows the zip.
    entries = {
        "z/last-name-first.docx": make_docx("Zulu first page", "Zulu second page"),
        f"reports/{TABLES}": corpus(TABLES).read_bytes(),
        "broken/truncated.docx": bad_documents()["truncated.docx"],
        "Ελληνικά/αναφορά.docx": make_docx("Greek path, one page"),
        f"a/{LISTS}": corpus(LISTS).read_bytes(),
    }
    job_id = submit(make_zip(entries), merge=True)
    run_to_the_end(job_id, sent, converter)

    job = job_row(job_id)
    assert job.status == JobStatus.COMPLETED
    assert job.merged_bytes == get_store().size(merged_key(job_id))
    converted = completed_in_order(job_id)
    assert [file.filename for file in converted] == [
        "z/last-name-first.docx",
        f"reports/{TABLES}",
        "Ελληνικά/αναφορά.docx",
        f"a/{LISTS}",
    ]
    own = [own_pdf(job_id, file) for file in converted]
    counts = [len(reader.pages) for reader in own]
    assert counts[0] == 2  # the sum below adds up more than one page per file

    merged = merged_reader(job_id)
    # Every converted file's pages, then one failure page for the one damaged file.
    assert len(merged.pages) == sum(counts) + 1
    starts = [sum(counts[:index]) for index in range(len(counts))]
    assert bookmarks(merged) == [
        *((file.filename, start) for file, start in zip(converted, starts, strict=True)),
        (FAILURE_BOOKMARK, sum(counts)),
    ]
    # Each file's pages are its own PDF's pages, in order.
    for reader, start in zip(own, starts, strict=True):
        for index, page in enumerate(reader.pages):
            assert page_text(merged, start + index) == " ".join(page.extract_text().split())
    assert "Zulu first page" in page_text(merged, 0)
    assert "Zulu second page" in page_text(merged, 1)

    damaged = files_by_name(job_id)["broken/truncated.docx"]
    assert damaged.status == FileStatus.FAILED and damaged.error_message
    failure_page = page_text(merged, sum(counts))
    assert "1 file(s) that could not be converted" in failure_page
    assert "broken/truncated.docx" in failure_page
    assert " ".join(damaged.error_message.split()) in failure_page


def test_without_the_failure_page_only_the_converted_pages_are_merged(
    backend: Backend, sent: SentTasks
) -> None:
    entries = {
        "one.docx": make_docx("one"),
        "empty.docx": b"",
        "two.docx": make_docx("two"),
    }
    job_id = submit(make_zip(entries), merge=True, merge_failure_page=False)
    run_to_the_end(job_id, sent, FakeConverter())
    merged = merged_reader(job_id)
    assert len(merged.pages) == 2
    assert bookmarks(merged) == [("one.docx", 0), ("two.docx", 1)]


def test_a_job_without_merge_writes_no_merged_pdf(backend: Backend, sent: SentTasks) -> None:
    job_id = submit(make_zip({"one.docx": make_docx("one")}))
    run_to_the_end(job_id, sent, FakeConverter())
    job = job_row(job_id)
    assert job.status == JobStatus.COMPLETED and job.merged_bytes is None
    assert not get_store().exists(merged_key(job_id))


def test_a_retry_round_rebuilds_the_merged_pdf(backend: Backend, sent: SentTasks) -> None:
    job_id = submit(make_zip({"good.docx": make_docx("good"), "empty.docx": b""}), merge=True)
    converter = FakeConverter()
    run_to_the_end(job_id, sent, converter)
    first = merged_reader(job_id)
    assert bookmarks(first) == [("good.docx", 0), (FAILURE_BOOKMARK, 1)]

    # The client fixes the file (here: its input in the store) and retries the job.
    empty = files_by_name(job_id)["empty.docx"]
    get_store().put_bytes(input_key(job_id, empty.id), make_docx("fixed"), "application/zip")
    job_actions.retry_job(job_id, "", get_store(), get_settings())
    job = job_row(job_id)
    assert job.status == JobStatus.IN_PROGRESS and job.merged_bytes is None
    assert not get_store().exists(merged_key(job_id))  # the old round's is gone at once

    while sent.conversions:
        convert_file(sent.conversions.pop(0), get_store(), converter, get_settings())
    while sent.archives:
        build_archive(sent.archives.pop(0), get_store())
    rebuilt = merged_reader(job_id)
    assert bookmarks(rebuilt) == [("good.docx", 0), ("empty.docx", 1)]
    assert len(rebuilt.pages) == 2
    assert job_row(job_id).merged_bytes == get_store().size(merged_key(job_id))


def test_deleting_the_job_removes_its_merged_pdf(backend: Backend, sent: SentTasks) -> None:
    job_id = submit(make_zip({"one.docx": make_docx("one")}), merge=True)
    run_to_the_end(job_id, sent, FakeConverter())
    assert get_store().exists(merged_key(job_id))
    job_actions.delete_job(job_id, "", get_store())
    assert not get_store().exists(merged_key(job_id))


class WorkerDied(BaseException):
    """Stands for the worker process ending mid-merge: nothing after it runs in that task."""


def test_a_worker_that_dies_while_merging_leaves_the_job_to_the_lease_sweep(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(make_zip({"one.docx": make_docx("one"), "two.docx": make_docx("two")}))
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(merge=True))
    converter = FakeConverter()
    ingest_job(job_id, get_store(), get_settings())
    while sent.conversions:
        convert_file(sent.conversions.pop(0), get_store(), converter, get_settings())
    assert sent.archives == [job_id]
    sent.archives.clear()

    real_copy = merge._copy_source
    copied: list[str] = []

    def dies_on_the_second_source(path: str, *args: object, **kwargs: object) -> object:
        copied.append(path)
        if len(copied) == 2:
            raise WorkerDied
        return real_copy(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(merge, "_copy_source", dies_on_the_second_source)
    with pytest.raises(WorkerDied):
        build_archive(job_id, get_store())
    monkeypatch.setattr(merge, "_copy_source", real_copy)
    # The zip was written, the merged PDF was not, and the job did not complete.
    assert not get_store().exists(merged_key(job_id))
    assert job_row(job_id).status == JobStatus.IN_PROGRESS

    # Its lease runs out (nobody renews it): the sweep sends the archive task again.
    expired = utcnow() - timedelta(seconds=1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=expired))
    assert resend_unleased(get_settings()).jobs.archive == [job_id]
    build_archive(sent.archives.pop(), get_store())
    job = job_row(job_id)
    assert job.status == JobStatus.COMPLETED
    assert bookmarks(merged_reader(job_id)) == [("one.docx", 0), ("two.docx", 1)]


# -- the writer on its own: a local store in a temporary folder ---------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", "test-secret")


def put_pdfs(store: LocalStore, contents: dict[str, bytes]) -> list[MergeSource]:
    for file_id, data in contents.items():
        store.put_bytes(output_key("job", file_id), data, "application/pdf")
    return [MergeSource(file_id, f"{file_id}.docx") for file_id in contents]


def read(store: LocalStore, key: str) -> PdfReader:
    return PdfReader(io.BytesIO(b"".join(store.iter_chunks(key))), strict=True)


def test_a_pdf_that_cannot_be_read_is_left_out_and_listed(
    store: LocalStore, tmp_path: Path
) -> None:
    sources = put_pdfs(
        store,
        {
            "first": minimal_pdf("first"),
            "garbage": b"%PDF-1.4 not really",
            "last": minimal_pdf("x"),
        },
    )
    result = write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path / "scratch")
    reader = read(store, "merged.pdf")
    assert result.pages == len(reader.pages) == 3
    assert result.merged == 2
    assert [item.title for item in result.left_out] == ["garbage.docx"]
    assert bookmarks(reader) == [("first.docx", 0), ("last.docx", 1), (FAILURE_BOOKMARK, 2)]
    assert "garbage.docx" in page_text(reader, 2)
    assert "could not be read for merging" in page_text(reader, 2)
    assert list((tmp_path / "scratch").iterdir()) == []  # nothing left in scratch


def test_many_failures_take_several_pages_and_long_messages_wrap(
    store: LocalStore, tmp_path: Path
) -> None:
    reason = "The document is damaged: " + " ".join(f"word{n}" for n in range(60))
    left_out = [LeftOut(f"folder/file-{n:03d}.docx", reason) for n in range(150)]
    sources = put_pdfs(store, {"ok": minimal_pdf("ok")})
    result = write_merged("job", sources, left_out, store, "merged.pdf", scratch=tmp_path)
    pages = failure_pages(left_out)
    assert len(pages) > 2  # the case under test
    assert all(len(lines) <= LINES_PER_PAGE for lines in pages)
    assert all(len(line) <= LINE_CHARS for lines in pages for line in lines)
    reader = read(store, "merged.pdf")
    assert result.pages == len(reader.pages) == 1 + len(pages)
    # Every file's entry whole, on one page: its path and its message (wrapped, indented).
    texts = [page_text(reader, index) for index in range(1, len(reader.pages))]
    message = " ".join(reason.split())
    for n in range(150):
        assert any(f"folder/file-{n:03d}.docx {message}" in text for text in texts), n
    assert "(continued)" in texts[1]


def test_titles_beyond_latin_1_keep_their_characters_in_the_bookmarks(
    store: LocalStore, tmp_path: Path
) -> None:
    titles = ["報告/第一.docx", "Ελληνικά/βιβλίο.docx", "plain.docx"]
    for index in range(3):
        store.put_bytes(output_key("job", str(index)), minimal_pdf(str(index)), "application/pdf")
    sources = [MergeSource(str(index), title) for index, title in enumerate(titles)]
    write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    assert bookmarks(read(store, "merged.pdf")) == [(title, n) for n, title in enumerate(titles)]


def test_a_heartbeat_that_refuses_leaves_no_object(store: LocalStore, tmp_path: Path) -> None:
    class Superseded(Exception):
        pass

    def refuse() -> None:
        raise Superseded

    sources = put_pdfs(store, {"one": minimal_pdf("one")})
    with pytest.raises(Superseded):
        write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path, heartbeat=refuse)
    assert not store.exists("merged.pdf")


def test_a_page_tree_of_several_nodes_keeps_the_order(store: LocalStore, tmp_path: Path) -> None:
    count = merge.PAGES_PER_NODE + 3  # past one node of the page tree
    sources = put_pdfs(store, {f"{n:04d}": minimal_pdf(f"page {n:04d}") for n in range(count)})
    write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    reader = read(store, "merged.pdf")
    assert len(reader.pages) == count
    for n in (0, merge.PAGES_PER_NODE - 1, merge.PAGES_PER_NODE, count - 1):
        assert f"page {n:04d}" in page_text(reader, n)


def test_the_bench_probe_merges_a_finished_jobs_pdfs_and_leaves_nothing(
    backend: Backend, sent: SentTasks
) -> None:
    entries = {f"doc-{n}.docx": make_docx(f"document {n}") for n in range(3)}
    job_id = submit(make_zip(entries))
    run_to_the_end(job_id, sent, FakeConverter())
    before = sorted(key for key, _ in get_store().list_objects(f"jobs/{job_id}/"))
    figures = probe_job(job_id)
    assert (figures["pdfs"], figures["pages"]) == (3, 3)
    assert figures["merged_bytes"] > 0 and figures["peak_rss_mb"] > 0
    assert sorted(key for key, _ in get_store().list_objects(f"jobs/{job_id}/")) == before
