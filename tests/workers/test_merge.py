"""The merged PDF of a job (``merge=true``): its pages, bookmarks and failure pages, and its
place in the archive's lifecycle (retry, delete, a worker dying while it is written).

Read back with pypdf, in strict mode: the file is written by Quire's own writer
(workers/merge.py), so its structure is under test as much as its content.
"""

from __future__ import annotations

import errno
import io
import struct
import tempfile
import traceback
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject
from sqlalchemy import select, update

from app.config import get_settings
from app.db import session_scope
from app.models import File, FileStatus, Job, JobStatus, utcnow
from app.services import job_actions
from app.storage import (
    LocalStore,
    ObjectWriter,
    get_store,
    input_key,
    merged_key,
    output_key,
    result_key,
)
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


# -- hostile sources: what pypdf raises on them leaves that source out, nothing else ------------

# One page whose content stream is object 4; each crafted file breaks how object 4 is found.
PAGE_OBJECTS = {
    1: b"<< /Type /Catalog /Pages 2 0 R >>",
    2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
}
CONTENT = b"<< /Length 0 >>\nstream\n\nendstream"


def pdf_with_table(objects: dict[int, bytes], lines: dict[int, bytes]) -> bytes:
    """A PDF with a classic cross-reference table; ``lines`` replace objects' entries."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = {}
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref_at, size = len(out), max([*objects, *lines]) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += lines.get(number, b"%010d 00000 n \n" % offsets.get(number, 0))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
    return bytes(out)


def pdf_with_xref_stream(
    objects: dict[int, bytes], entries: dict[int, tuple[int, int, int]]
) -> bytes:
    """A PDF with a cross-reference stream (W [1 8 2]); ``entries`` replace objects' entries,
    as (type, field 2, field 3): type 2 is an object in an object stream (its number, index)."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = {}
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref_at, size = len(out), max([*objects, *entries]) + 2
    offsets[size - 1] = xref_at
    table = bytearray()
    for number in range(size):
        kind, field, generation = entries.get(
            number, (1, offsets[number], 0) if number in offsets else (0, 0, 0)
        )
        table += bytes([kind]) + field.to_bytes(8, "big") + generation.to_bytes(2, "big")
    data = zlib.compress(bytes(table))
    out += (
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 8 2] /Root 1 0 R /Filter /FlateDecode "
        b"/Length %d >>\nstream\n%b\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n"
        % (size - 1, size, len(data), data, xref_at)
    )
    return bytes(out)


def in_object_stream(stream_dict: bytes, data: bytes) -> bytes:
    """The page's content as object 0 of object stream 6, described by ``stream_dict``."""
    objects = {
        **PAGE_OBJECTS,
        6: b"<< %b /Length %d >>\nstream\n%b\nendstream" % (stream_dict, len(data), data),
    }
    return pdf_with_xref_stream(objects, {4: (2, 6, 0)})


# Each a real file on which pypdf 7 raises something other than its own errors while the
# source's objects are read: before #18's review, each failed the whole job's archive (or, for
# the OSError, retried it eight times first).
HOSTILE = {
    # A negative offset in the table: the seek on the scratch file raises EINVAL.
    "OSError": pdf_with_table({**PAGE_OBJECTS, 4: CONTENT}, {4: b"-000000009 00000 n \n"}),
    "NotImplementedError": in_object_stream(b"/Type /ObjStm /N 1 /First 4 /Filter /Nope", b"x"),
    "AssertionError": in_object_stream(b"/Type /XObject /N 1 /First 4", b"4 0 1234"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_source_on_which_pypdf_raises_anything_is_left_out_and_listed(
    store: LocalStore, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    sources = put_pdfs(
        store, {"first": minimal_pdf("first"), "hostile": HOSTILE[kind], "last": minimal_pdf("x")}
    )
    result = write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path / "scratch")
    reader = read(store, "merged.pdf")
    assert result.merged == 2 and result.pages == len(reader.pages) == 3
    assert bookmarks(reader) == [("first.docx", 0), ("last.docx", 1), (FAILURE_BOOKMARK, 2)]
    [left_out] = result.left_out
    assert left_out.title == "hostile.docx"
    assert left_out.reason.startswith("Its PDF could not be read for merging; it may be damaged")
    assert kind in left_out.reason  # what pypdf raised, for whoever reads the logs of it
    assert "hostile.docx" in page_text(reader, 2)
    assert "merge.source_unreadable" in caplog.text
    assert list((tmp_path / "scratch").iterdir()) == []


class RaisingReader(PdfReader):
    """pypdf's reader, raising ``error`` whenever it resolves an object of the file ``1.pdf``
    (the second source): for what no crafted file made pypdf 7 raise (it guards its zlib
    calls, seeks and struct unpacking), at the boundary the merge calls."""

    error: BaseException = Exception()

    def get_object(self, indirect_reference: Any) -> Any:
        if str(getattr(self.stream, "name", "")).endswith("/1.pdf"):
            raise self.error
        return super().get_object(indirect_reference)


@pytest.mark.parametrize(
    "error",
    [
        IndexError("list index out of range"),
        OverflowError("Python int too large to convert to C long"),
        zlib.error("Error -3 while decompressing data"),
        struct.error("unpack requires a buffer of 8 bytes"),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
    ],
    ids=lambda error: f"{type(error).__module__}.{type(error).__name__}",
)
def test_any_exception_raised_inside_pypdf_leaves_the_source_out(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(RaisingReader, "error", error)
    monkeypatch.setattr(merge, "PdfReader", RaisingReader)
    sources = put_pdfs(store, {"a": minimal_pdf("a"), "b": minimal_pdf("b"), "c": minimal_pdf("c")})
    result = write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    assert [item.title for item in result.left_out] == ["b.docx"]
    assert type(error).__name__ in result.left_out[0].reason
    assert bookmarks(read(store, "merged.pdf")) == [
        ("a.docx", 0),
        ("c.docx", 1),
        (FAILURE_BOOKMARK, 2),
    ]


def test_a_soft_time_limit_inside_pypdf_ends_the_merge_instead_of_leaving_a_source_out(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RaisingReader, "error", SoftTimeLimitExceeded())
    monkeypatch.setattr(merge, "PdfReader", RaisingReader)
    sources = put_pdfs(store, {"a": minimal_pdf("a"), "b": minimal_pdf("b")})
    with pytest.raises(SoftTimeLimitExceeded):
        write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    assert not store.exists("merged.pdf")


def test_a_full_scratch_disk_ends_the_merge_instead_of_leaving_a_source_out(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool is written by the merge, not by pypdf: its OSError is the task's (retried as
    transient), not the source's."""

    class FullSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", FullSpool)
    sources = put_pdfs(store, {"a": minimal_pdf("a")})
    with pytest.raises(OSError) as raised:
        write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    assert raised.value.errno == errno.ENOSPC
    assert not store.exists("merged.pdf")


def test_the_heartbeat_is_called_inside_a_sources_copy_and_what_it_raises_ends_the_merge(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source whose download and copy outlast the archive's lease must still beat; and the
    archive's refusal raised there is not the source's fault."""

    class Superseded(Exception):
        pass

    def refuse_inside_a_copy() -> None:
        if any(frame.name == "_copy_pages" for frame in traceback.extract_stack()):
            raise Superseded

    monkeypatch.setattr(merge, "HEARTBEAT_SECONDS", 0.0)  # due at every chance
    sources = put_pdfs(store, {"one": minimal_pdf("one")})
    with pytest.raises(Superseded):
        write_merged(
            "job",
            sources,
            [],
            store,
            "merged.pdf",
            scratch=tmp_path,
            heartbeat=refuse_inside_a_copy,
        )
    assert not store.exists("merged.pdf")


def test_the_final_heartbeat_is_the_last_step_before_the_object_appears(
    store: LocalStore, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    seen: list[tuple[list[Path], bool]] = []

    def beat() -> None:  # what is left to do at each heartbeat
        seen.append((list(scratch.iterdir()), store.exists("merged.pdf")))

    sources = put_pdfs(store, {"one": minimal_pdf("one")})
    write_merged("job", sources, [], store, "merged.pdf", scratch=scratch, heartbeat=beat)
    # Its scratch folder already removed, the object not yet committed.
    assert seen[-1] == ([], False)
    assert store.exists("merged.pdf")


def test_when_no_source_can_be_read_the_failure_page_is_written_even_if_turned_off(
    store: LocalStore, tmp_path: Path
) -> None:
    """A PDF of no pages is refused by viewers: the failure page says why it is empty."""
    sources = put_pdfs(store, {"garbage": b"%PDF-1.4 not really"})
    failed = [LeftOut("failed.docx", "The document is damaged.")]
    result = write_merged(
        "job", sources, failed, store, "merged.pdf", scratch=tmp_path, failure_page=False
    )
    reader = read(store, "merged.pdf")
    assert result.merged == 0 and result.pages == len(reader.pages) == 1
    assert bookmarks(reader) == [(FAILURE_BOOKMARK, 0)]
    assert "failed.docx" in page_text(reader, 0) and "garbage.docx" in page_text(reader, 0)


def test_a_source_of_no_pages_is_left_out_and_listed(store: LocalStore, tmp_path: Path) -> None:
    no_pages = pdf_with_table(
        {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [] /Count 0 >>"}, {}
    )
    sources = put_pdfs(store, {"one": minimal_pdf("one"), "none": no_pages})
    result = write_merged("job", sources, [], store, "merged.pdf", scratch=tmp_path)
    assert result.left_out == [LeftOut("none.docx", "Its PDF has no pages.")]
    reader = read(store, "merged.pdf")
    assert bookmarks(reader) == [("one.docx", 0), (FAILURE_BOOKMARK, 1)]
    assert "Its PDF has no pages." in page_text(reader, 1)


def page_tree_counts(reader: PdfReader) -> list[tuple[int, int]]:
    """(/Count, number of /Kids) of each node under the root of the page tree."""
    root = reader.root_object["/Pages"].get_object()
    assert isinstance(root, DictionaryObject) and isinstance(root["/Kids"], ArrayObject)
    nodes = [kid.get_object() for kid in root["/Kids"]]
    assert all(isinstance(node, DictionaryObject) for node in nodes)
    return [(int(node["/Count"]), len(node["/Kids"])) for node in nodes]


def test_a_source_that_fails_after_its_pages_were_numbered_leaves_no_empty_page_tree_node(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One page per node, so the hostile source's page opens a node before its content fails.
    monkeypatch.setattr(merge, "PAGES_PER_NODE", 1)
    hostile = HOSTILE["NotImplementedError"]
    sources = put_pdfs(store, {"a": minimal_pdf("a"), "b": minimal_pdf("b"), "bad": hostile})
    result = write_merged(
        "job", sources, [], store, "merged.pdf", scratch=tmp_path, failure_page=False
    )
    reader = read(store, "merged.pdf")
    assert [item.title for item in result.left_out] == ["bad.docx"]
    assert len(reader.pages) == 2
    assert page_tree_counts(reader) == [(1, 1), (1, 1)]


# -- past 10^10 bytes: the cross-reference table's offsets have 10 digits ------------------------


class SparseWriter:
    """An object writer to a local file that, after its first write (the header), skips ``gap``
    bytes: a hole in a sparse file, read back as NUL bytes, which PDF counts as white space.
    Every object lies at an offset past the hole without gigabytes being written."""

    def __init__(self, path: Path, gap: int) -> None:
        self.file = path.open("wb")
        self.gap = gap
        self.writes = 0
        self.bytes_written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.writes += 1
        self.file.write(data)
        self.bytes_written += len(data)
        if self.writes == 1:
            self.file.seek(self.gap, io.SEEK_CUR)
            self.bytes_written += self.gap

    def commit(self) -> None:
        self.file.close()

    def abort(self) -> None:
        self.file.close()


@pytest.mark.parametrize(
    ("gap", "cross_reference"),
    [
        (merge.XREF_TABLE_LIMIT - 10**6, b"xref"),  # every offset still of 10 digits
        (merge.XREF_TABLE_LIMIT, b"/Type /XRef"),  # every object past them
    ],
    ids=["below-10^10", "past-10^10"],
)
def test_a_merged_pdf_past_ten_gigabytes_keeps_a_readable_cross_reference(
    store: LocalStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gap: int,
    cross_reference: bytes,
) -> None:
    target = tmp_path / "merged.pdf"
    writers: list[SparseWriter] = []

    def open_sparse(key: str, content_type: str) -> ObjectWriter:
        writers.append(SparseWriter(target, gap))
        return writers[-1]

    sources = put_pdfs(store, {"one": minimal_pdf("page one"), "two": minimal_pdf("page two")})
    monkeypatch.setattr(store, "open_writer", open_sparse)
    failed = [LeftOut("failed.docx", "The document is damaged.")]
    result = write_merged("job", sources, failed, store, "merged.pdf", scratch=tmp_path / "s")
    assert result.bytes_written == target.stat().st_size > gap
    with target.open("rb") as pdf:
        pdf.seek(-64, io.SEEK_END)
        startxref = int(pdf.read().split(b"startxref")[1].split()[0])
        pdf.seek(startxref)
        assert cross_reference in pdf.read(200)
        reader = PdfReader(pdf, strict=True)
        assert len(reader.pages) == 3
        assert bookmarks(reader) == [("one.docx", 0), ("two.docx", 1), (FAILURE_BOOKMARK, 2)]
        assert page_text(reader, 1) == "page two"
        assert "failed.docx" in page_text(reader, 2)
    target.unlink()  # its size is 10 GB for whatever walks the temporary folders later


def test_a_job_cancelled_while_its_merged_pdf_is_written_keeps_neither_file(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(
        make_zip({"one.docx": make_docx("one"), "two.docx": make_docx("two")}), merge=True
    )
    converter = FakeConverter()
    ingest_job(job_id, get_store(), get_settings())
    while sent.conversions:
        convert_file(sent.conversions.pop(0), get_store(), converter, get_settings())
    assert sent.archives == [job_id]

    real_copy = merge._copy_source

    def cancel_then_copy(*args: Any, **kwargs: Any) -> Any:
        if job_row(job_id).status != JobStatus.CANCELLED:  # the zip is stored by now
            assert get_store().exists(result_key(job_id))
            job_actions.cancel_job(job_id, "")
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(merge, "_copy_source", cancel_then_copy)
    build_archive(sent.archives.pop(), get_store())
    assert job_row(job_id).status == JobStatus.CANCELLED
    assert not get_store().exists(result_key(job_id))  # a cancelled job has no archive
    assert not get_store().exists(merged_key(job_id))
