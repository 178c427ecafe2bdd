"""One PDF of a whole job (``merge=true``), written in bounded memory.

pypdf's PdfWriter keeps every page it was given until it writes the file, so a job of 1,000
PDFs would be held whole. This writer copies one source at a time instead: it reads the
source's pages with pypdf, follows their references, and writes each object out as soon as it
is read, under a new number. What stays in memory between sources is a few integers per object
(its offset, for the cross-reference table) and per page (its number, for the page tree), plus
one bookmark per source. The source's reader, and every object it parsed, is dropped before the
next source is opened.

A source is first written to a spool of its own (a temporary file past 8 MiB), and copied into
the output only once all its objects were read: a PDF pypdf cannot read is then left out whole,
listed on the last page with why, instead of leaving references to objects never written. What
pypdf raises on a malformed source is not only its own errors (a bad offset is an OSError from
the seek, a broken object stream an AssertionError or NotImplementedError...), and LibreOffice
copies the objects of a PDF picture into its output, so a hostile document chooses some of what
pypdf reads here: every exception raised inside pypdf while a source is read leaves that source
out. Errors of the writer's own side (the store, the scratch disk, the heartbeat) are raised
outside pypdf and end the merge as before. A merge in which no source's pages made it in gets
the failure pages even when they were turned off: a PDF of no pages is refused by viewers.

The cross-reference table's entries hold 10-digit offsets; a merged file whose objects lie past
10^10 bytes gets a cross-reference stream instead (PDF 1.5), whose offsets are as wide as needed.

The result is plain PDF (1.7): each source's pages, fonts and images as LibreOffice wrote them,
one bookmark per source named by its path, and, if asked, pages listing the files left out
(drawn here with the standard Courier font, so nothing needs to be embedded). Document-level
parts of the sources (their own outlines, structure trees, PDF/A metadata) are not carried
over: the merged file is for reading and printing, the per-file PDFs keep the rest.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from celery.exceptions import SoftTimeLimitExceeded
from pypdf import PdfReader
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NameObject,
    StreamObject,
    TextStringObject,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.logs import get_logger
from app.models import File, FileStatus, Job
from app.storage import ObjectStore, ObjectWriter, WriterScope, merged_key, output_key

log = get_logger("quire.merge")
HEARTBEAT_SECONDS = 60.0
PAGES_PER_NODE = 256  # a two-level page tree: viewers find page n without reading every page
SPOOL_IN_MEMORY = 8 * 1024 * 1024
# The classic cross-reference table's offsets have 10 digits: past them, a stream is written.
XREF_TABLE_LIMIT = 10**10
XREF_STREAM_BATCH = 4096  # entries packed and compressed at a time
# Keys of a source's page that point into the source's document structure, not the page's own
# content: the page's parent (it gets ours), article beads and its place in a structure tree.
DROPPED_PAGE_KEYS = frozenset({"/Parent", "/B", "/StructParents"})

# The pages listing the files left out: A4, Courier 9 pt, whose every glyph is 0.6 em wide, so
# a line of LINE_CHARS characters fits between the margins without measuring text.
PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 595, 842, 50
FONT_SIZE, LEADING, TITLE_SIZE = 9, 11, 13
LINE_CHARS = int((PAGE_WIDTH - 2 * MARGIN) / (0.6 * FONT_SIZE))
LINES_PER_PAGE = int((PAGE_HEIGHT - 2 * MARGIN - 2 * LEADING) / LEADING)
FAILURE_BOOKMARK = "Files not converted"
COMPLETED = FileStatus.COMPLETED


@dataclass(frozen=True)
class MergeSource:
    """A converted file: its PDF in the store and its path in the upload (the bookmark)."""

    file_id: str
    title: str


@dataclass(frozen=True)
class LeftOut:
    """A file that is not in the merged PDF, and why."""

    title: str
    reason: str


@dataclass(frozen=True)
class MergeResult:
    bytes_written: int
    pages: int
    merged: int  # sources whose pages are in the file
    left_out: list[LeftOut]  # the job's failed files and the sources that could not be read


class _Output:
    """The merged file as it is written: byte positions and object numbers."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        # Object n's offset at index n; -1 while allocated and not written. Index 0 is the
        # cross-reference table's free-list head.
        self.offsets = array("q", [0])

    @property
    def position(self) -> int:
        # The writer's own count, so that offsets are the bytes it was handed, whatever it is.
        return self.writer.bytes_written

    def allocate(self) -> int:
        self.offsets.append(-1)
        return len(self.offsets) - 1

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def write_object(self, number: int, body: bytes) -> None:
        self.offsets[number] = self.position
        self.write(b"%d 0 obj\n%b\nendobj\n" % (number, body))


class _Heartbeat:
    """The caller's heartbeat, called at most every HEARTBEAT_SECONDS however often this is:
    between sources and inside one source's copy, whose download and copy can outlast the
    archive's lease on their own."""

    def __init__(self, beat: Callable[[], None] | None) -> None:
        self.beat = beat
        self.due = time.monotonic() + HEARTBEAT_SECONDS

    def __call__(self) -> None:
        if self.beat is not None and time.monotonic() >= self.due:
            self.beat()
            self.due = time.monotonic() + HEARTBEAT_SECONDS

    def now(self) -> None:
        if self.beat is not None:
            self.beat()


class _Unreadable(Exception):
    """pypdf failed on a source (the error is the cause): the source is left out."""


@contextmanager
def _reading() -> Iterator[None]:
    """Around each call into pypdf for a source: whatever it raises means the source could not
    be read. A soft time limit is the task's, not the source's, and goes on up."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:
        raise _Unreadable(error) from error


class _PageTree:
    """The merged file's pages, under a two-level tree: a node per PAGES_PER_NODE pages.

    A page's /Parent is written with the page, so a node is numbered when its first page is
    copied; a source that fails after that gives back the nodes it opened (``rollback``), so no
    node without pages is ever written."""

    def __init__(self, output: _Output) -> None:
        self.output = output
        self.root = output.allocate()
        self.pages = array("q")
        self.nodes: list[int] = []

    def parent(self, index: int) -> int:
        """The node of the page at ``index`` (counting every page merged so far)."""
        while len(self.nodes) <= index // PAGES_PER_NODE:
            self.nodes.append(self.output.allocate())
        return self.nodes[index // PAGES_PER_NODE]

    def rollback(self) -> None:
        """Forget the nodes opened for pages that were not kept."""
        needed = -(-len(self.pages) // PAGES_PER_NODE)  # rounded up
        del self.nodes[needed:]


def _serialize(value: Any, out: BytesIO, ref: Callable[[IndirectObject], int]) -> None:
    """Write a pypdf object as PDF syntax, each reference renumbered through ``ref``."""
    if isinstance(value, IndirectObject):
        out.write(b"%d 0 R" % ref(value))
    elif isinstance(value, StreamObject):
        # The stream's bytes as they were read (still compressed), with its own filters.
        data: bytes = value._data
        _serialize_dict(value, out, ref, skip=frozenset({"/Length"}))
        out.write(b"\nstream\n")
        out.write(data)
        out.write(b"\nendstream")
    elif isinstance(value, DictionaryObject):
        _serialize_dict(value, out, ref)
    elif isinstance(value, ArrayObject):
        out.write(b"[")
        for item in value:
            out.write(b" ")
            _serialize(item, out, ref)
        out.write(b" ]")
    elif value is None:
        out.write(b"null")
    else:
        value.write_to_stream(out)


def _serialize_dict(
    value: DictionaryObject,
    out: BytesIO,
    ref: Callable[[IndirectObject], int],
    skip: frozenset[str] = frozenset(),
    extra: bytes = b"",
) -> None:
    out.write(b"<<")
    for key, item in value.items():
        if key in skip:
            continue
        out.write(b"\n")
        NameObject(key).write_to_stream(out)
        out.write(b" ")
        _serialize(item, out, ref)
    if isinstance(value, StreamObject):  # its length as written, whatever the source said
        out.write(b"\n/Length %d" % len(value._data))
    out.write(extra)
    out.write(b"\n>>")


def _copy_source(
    path: str, output: _Output, spool: IO[bytes], tree: _PageTree, tick: Callable[[], None]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Write the source's pages and every object they reach to ``spool``.

    Returns the new numbers of its pages and (number, offset in the spool) of each object.
    Nothing is written to ``output`` itself; it only hands out the numbers. The reader, and
    every object it parsed, is gone when this returns. Raises _Unreadable for what pypdf
    raised; the spool's and ``tick``'s own errors go on up as they are."""
    with open(path, "rb") as pdf:
        with _reading():
            reader = PdfReader(pdf)
        return _copy_pages(reader, output, spool, tree, tick)


def _copy_pages(
    reader: PdfReader,
    output: _Output,
    spool: IO[bytes],
    tree: _PageTree,
    tick: Callable[[], None],
) -> tuple[list[int], list[tuple[int, int]]]:
    numbers: dict[tuple[int, int], int] = {}
    pending: deque[tuple[IndirectObject, int]] = deque()

    def ref(indirect: IndirectObject) -> int:
        key = (indirect.idnum, indirect.generation)
        number = numbers.get(key)
        if number is None:
            number = numbers[key] = output.allocate()
            pending.append((indirect, number))
        return number

    with _reading():
        # A reference to the source's own page tree (rare, from an annotation) points at ours,
        # so the source's other pages are never copied twice through it.
        root_pages = reader.root_object.raw_get("/Pages")
        if isinstance(root_pages, IndirectObject):
            numbers[(root_pages.idnum, root_pages.generation)] = tree.root
        pages = list(reader.pages)
        page_numbers: list[int] = []
        for page in pages:
            indirect = page.indirect_reference
            number = output.allocate()
            if indirect is not None:  # links between the source's pages keep pointing at them
                numbers[(indirect.idnum, indirect.generation)] = number
            page_numbers.append(number)
    written: list[tuple[int, int]] = []
    first_page_index = len(tree.pages)
    for index, (page, number) in enumerate(zip(pages, page_numbers, strict=True)):
        body = BytesIO()
        parent = b"\n/Parent %d 0 R" % tree.parent(first_page_index + index)
        with _reading():
            _serialize_dict(page, body, ref, skip=DROPPED_PAGE_KEYS, extra=parent)
        written.append((number, spool.tell()))
        spool.write(b"%d 0 obj\n%b\nendobj\n" % (number, body.getvalue()))
        tick()
    while pending:
        indirect, number = pending.popleft()
        body = BytesIO()
        with _reading():
            _serialize(indirect.get_object(), body, ref)
        written.append((number, spool.tell()))
        spool.write(b"%d 0 obj\n%b\nendobj\n" % (number, body.getvalue()))
        tick()
    return page_numbers, written


def _pdf_text(line: str) -> bytes:
    """A literal string of the standard fonts' encoding (WinAnsi): what it cannot show is '?'."""
    printable = "".join(char if char >= " " else " " for char in line)
    data = printable.encode("cp1252", errors="replace")
    return b"(" + data.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def failure_pages(left_out: Sequence[LeftOut]) -> list[list[str]]:
    """The lines of each failure page, wrapped to the page's width. A file's entry (its path,
    then its message, indented) is kept on one page unless it is longer than a page."""
    pages: list[list[str]] = [[]]
    for item in left_out:
        entry = textwrap.wrap(
            item.title, LINE_CHARS, subsequent_indent="  ", break_on_hyphens=False
        ) or [""]
        entry += textwrap.wrap(
            item.reason or "no reason was recorded",
            LINE_CHARS,
            initial_indent="    ",
            subsequent_indent="    ",
        )
        if pages[-1] and len(pages[-1]) + len(entry) > LINES_PER_PAGE:
            pages.append([])
        for line in entry:
            if len(pages[-1]) == LINES_PER_PAGE:
                pages.append([])
            pages[-1].append(line)
        if len(pages[-1]) < LINES_PER_PAGE:
            pages[-1].append("")  # a blank line between entries
    return pages


def _failure_pages(left_out: Sequence[LeftOut]) -> Iterable[bytes]:
    """Content streams, one per page, listing the files left out."""
    title = f"Not in this PDF: {len(left_out)} file(s) that could not be converted"
    for number, lines in enumerate(failure_pages(left_out)):
        top = PAGE_HEIGHT - MARGIN
        ops = [b"BT", b"/F1 %d Tf" % TITLE_SIZE, b"%d %d Td" % (MARGIN, top)]
        ops.append(_pdf_text(title if number == 0 else f"{title} (continued)") + b" Tj")
        ops += [b"/F1 %d Tf" % FONT_SIZE, b"%d TL" % LEADING, b"0 %d Td" % (-2 * LEADING)]
        for line in lines:
            ops.append(_pdf_text(line) + b" Tj T*")
        ops.append(b"ET")
        yield b"\n".join(ops)


def write_merged(
    job_id: str,
    sources: Sequence[MergeSource],
    left_out: Sequence[LeftOut],
    store: ObjectStore,
    key: str,
    *,
    scratch: Path,
    failure_page: bool = True,
    heartbeat: Callable[[], None] | None = None,
) -> MergeResult:
    """Write one PDF of ``sources`` (in this order) to ``key``; ``left_out`` are listed on the
    last pages when ``failure_page``, or when no source's pages made it in (a PDF needs a page).

    ``heartbeat`` is called every HEARTBEAT_SECONDS while it works, and once more as the last
    step before the object appears (it may raise to abort the write, as the archive's does)."""
    if not sources and not left_out:
        raise ValueError("a merged PDF needs at least one file, converted or not")
    scratch.mkdir(parents=True, exist_ok=True)
    tick = _Heartbeat(heartbeat)
    unreadable: list[LeftOut] = []
    bookmarks: list[tuple[str, int]] = []  # (title, the number of its first page)
    merged = 0
    with WriterScope(store.open_writer(key, "application/pdf")) as writer:
        output = _Output(writer)
        output.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        tree = _PageTree(output)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="merge-") as workdir:
            for index, source in enumerate(sources):
                tick()
                first_page = len(tree.pages)
                local = os.path.join(workdir, f"{index}.pdf")
                reason = _merge_source(job_id, source, local, store, output, tree, tick)
                if reason is None:
                    bookmarks.append((source.title, tree.pages[first_page]))
                    merged += 1
                else:
                    unreadable.append(LeftOut(source.title, reason))
        everything_left_out = [*left_out, *unreadable]
        if everything_left_out and (failure_page or not merged):
            first = _write_failure_pages(output, tree, everything_left_out)
            bookmarks.append((FAILURE_BOOKMARK, first))
        _write_page_tree(output, tree)
        outlines = _write_outlines(output, bookmarks)
        _write_trailer(output, tree.root, outlines, job_id)
        # The last step before the object's commit (when this block ends): nothing may come
        # between the check that the archive is still this round's and the object appearing.
        tick.now()
    return MergeResult(
        bytes_written=writer.bytes_written,
        pages=len(tree.pages),
        merged=merged,
        left_out=everything_left_out,
    )


def _merge_source(
    job_id: str,
    source: MergeSource,
    local: str,
    store: ObjectStore,
    output: _Output,
    tree: _PageTree,
    tick: Callable[[], None],
) -> str | None:
    """Copy one source's pages into ``output``: None once they are in, else why it was left out
    (a PDF pypdf could not read, or one of no pages)."""
    store.download_file(output_key(job_id, source.file_id), local)
    try:
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=os.path.dirname(local)) as spool:
            try:
                numbers, written = _copy_source(local, output, spool, tree, tick)
            except _Unreadable as unreadable:
                tree.rollback()  # its numbers stay unwritten: free entries of the table
                error = unreadable.__cause__
                log.warning(
                    "merge.source_unreadable",
                    job_id=job_id,
                    file_id=source.file_id,
                    error=repr(error),
                )
                detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                return f"Its PDF could not be read for merging; it may be damaged ({detail})."
            if not numbers:
                return "Its PDF has no pages."
            base = output.position
            spool.seek(0)
            while chunk := spool.read(1024 * 1024):
                output.write(chunk)
                tick()
            for number, offset in written:
                output.offsets[number] = base + offset
            tree.pages.extend(numbers)
            return None
    finally:
        os.unlink(local)  # scratch holds one source at a time


def _write_failure_pages(output: _Output, tree: _PageTree, left_out: Sequence[LeftOut]) -> int:
    """The pages listing the files left out, after the merged ones; returns the first's number."""
    font = output.allocate()
    output.write_object(
        font,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>",
    )
    numbers: list[int] = []
    for content in _failure_pages(left_out):
        page, stream = output.allocate(), output.allocate()
        packed = zlib.compress(content)
        output.write_object(
            stream,
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%b\nendstream" % (len(packed), packed),
        )
        output.write_object(
            page,
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
            % (tree.parent(len(tree.pages)), PAGE_WIDTH, PAGE_HEIGHT, font, stream),
        )
        tree.pages.append(page)
        numbers.append(page)
    return numbers[0]


def _write_page_tree(output: _Output, tree: _PageTree) -> None:
    for index, node in enumerate(tree.nodes):
        kids = tree.pages[index * PAGES_PER_NODE : (index + 1) * PAGES_PER_NODE]
        output.write_object(
            node,
            b"<< /Type /Pages /Parent %d 0 R /Count %d /Kids [%b] >>"
            % (tree.root, len(kids), b" ".join(b"%d 0 R" % kid for kid in kids)),
        )
    output.write_object(
        tree.root,
        b"<< /Type /Pages /Count %d /Kids [%b] >>"
        % (len(tree.pages), b" ".join(b"%d 0 R" % node for node in tree.nodes)),
    )


def _write_outlines(output: _Output, bookmarks: list[tuple[str, int]]) -> int:
    """One top-level bookmark per source (and the failure pages), each opening its first page."""
    outlines = output.allocate()
    items = [output.allocate() for _ in bookmarks]
    for index, ((title, page), item) in enumerate(zip(bookmarks, items, strict=True)):
        body = BytesIO()
        body.write(b"<< /Title ")
        TextStringObject(title).write_to_stream(body)
        body.write(b" /Parent %d 0 R /Dest [%d 0 R /Fit]" % (outlines, page))
        if index > 0:
            body.write(b" /Prev %d 0 R" % items[index - 1])
        if index + 1 < len(items):
            body.write(b" /Next %d 0 R" % items[index + 1])
        body.write(b" >>")
        output.write_object(item, body.getvalue())
    if items:
        output.write_object(
            outlines,
            b"<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count %d >>"
            % (items[0], items[-1], len(items)),
        )
    else:
        output.write_object(outlines, b"<< /Type /Outlines /Count 0 >>")
    return outlines


def _write_trailer(output: _Output, pages_root: int, outlines: int, job_id: str) -> None:
    catalog, info = output.allocate(), output.allocate()
    output.write_object(
        catalog,
        b"<< /Type /Catalog /Pages %d 0 R /Outlines %d 0 R /PageMode /UseOutlines >>"
        % (pages_root, outlines),
    )
    output.write_object(info, b"<< /Producer (Quire) /Title (Quire job %b) >>" % job_id.encode())
    file_id = zlib.crc32(job_id.encode()).to_bytes(4, "big").hex().encode() * 4
    trailer = b"/Root %d 0 R /Info %d 0 R /ID [<%b> <%b>]" % (catalog, info, file_id, file_id)
    if max(output.offsets) < XREF_TABLE_LIMIT:
        _write_xref_table(output, trailer)
    else:
        _write_xref_stream(output, trailer)


def _write_xref_table(output: _Output, trailer: bytes) -> None:
    xref_at = output.position
    table = BytesIO()
    table.write(b"xref\n0 %d\n0000000000 65535 f \n" % len(output.offsets))
    for offset in output.offsets[1:]:
        # An object of a source that could not be read was numbered and never written.
        table.write(b"%010d 00000 n \n" % offset if offset >= 0 else b"0000000000 00000 f \n")
    table.write(
        b"trailer\n<< /Size %d %b >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(output.offsets), trailer, xref_at)
    )
    output.write(table.getvalue())


def _write_xref_stream(output: _Output, trailer: bytes) -> None:
    """The cross-reference as a stream (PDF 1.5, 7.5.8): each entry a type byte, the offset in
    as many bytes as the largest needs, and a 2-byte generation. Packed and compressed a batch
    at a time, so only the compressed table is held."""
    number = output.allocate()
    xref_at = output.position
    output.offsets[number] = xref_at
    width = (max(output.offsets).bit_length() + 7) // 8
    compressor = zlib.compressobj()
    packed: list[bytes] = []
    for start in range(0, len(output.offsets), XREF_STREAM_BATCH):
        batch = bytearray()
        for index, offset in enumerate(output.offsets[start : start + XREF_STREAM_BATCH]):
            if start + index == 0:
                batch += b"\x00" + bytes(width) + b"\xff\xff"  # the free-list head
            elif offset < 0:  # numbered and never written: free
                batch += b"\x00" + bytes(width) + b"\x00\x00"
            else:
                batch += b"\x01" + offset.to_bytes(width, "big") + b"\x00\x00"
        packed.append(compressor.compress(bytes(batch)))
    packed.append(compressor.flush())
    data = b"".join(packed)
    output.write(
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 %d 2] %b /Filter /FlateDecode /Length %d >>\n"
        b"stream\n%b\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n"
        % (number, len(output.offsets), width, trailer, len(data), data, xref_at)
    )


@dataclass(frozen=True)
class MergePlan:
    """What a job's merged PDF is made of, read in the archive's transaction."""

    sources: list[MergeSource]
    left_out: list[LeftOut]
    failure_page: bool


def plan_merge(session: Session, job: Job) -> MergePlan | None:
    """The job's files in upload order (File.position): the converted ones become the merged
    PDF, the others its failure page. None when the job did not ask for a merge."""
    if not job.merge:
        return None
    rows = session.execute(
        select(File.id, File.filename, File.status, File.error_message)
        .where(File.job_id == job.id)
        .order_by(File.position)
    ).all()
    return MergePlan(
        sources=[MergeSource(row.id, row.filename) for row in rows if row.status == COMPLETED],
        left_out=[
            LeftOut(row.filename, row.error_message or f"The file is {row.status.value}.")
            for row in rows
            if row.status != COMPLETED
        ],
        failure_page=job.merge_failure_page,
    )


def build_merged(
    job_id: str,
    plan: MergePlan,
    store: ObjectStore,
    scratch: Path,
    heartbeat: Callable[[], None] | None = None,
) -> MergeResult:
    """Write the job's merged PDF to its key (merged_key); replaces an earlier round's."""
    started = time.monotonic()
    result = write_merged(
        job_id,
        plan.sources,
        plan.left_out,
        store,
        merged_key(job_id),
        scratch=scratch,
        failure_page=plan.failure_page,
        heartbeat=heartbeat,
    )
    log.info(
        "merge.written",
        job_id=job_id,
        pdfs=result.merged,
        left_out=len(result.left_out),
        pages=result.pages,
        bytes=result.bytes_written,
        seconds=round(time.monotonic() - started, 3),
    )
    return result
