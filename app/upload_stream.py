"""Receiving ``POST /api/v1/jobs`` as multipart: the body goes straight into the object store.

Two shapes of the same upload: one zip in the field ``file``, or several DOCX files in the field
``files`` (repeated), which are written into a zip on the fly, so everything after this module
sees one zip either way. Small form fields (the job's options) are collected on the side.

No ``UploadFile`` spooling and no whole-file buffer: the chunks the client sends are parsed and
written on in batches (as one multipart upload part on S3), and the bytes are counted against the
limit. Parsing is bounded too: parts are counted as they come (413 past the job's file limit),
and each part's header lines are limited in size and number (400).
"""

from __future__ import annotations

import hashlib
import posixpath
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from app.storage import ObjectStore, ObjectWriter
from app.zipinput import UploadRejected, is_document_name

ZIP_FIELD = "file"
DOCX_FIELD = "files"
# The job's options may come as form fields beside the upload; any other field is ignored.
OPTION_FIELDS = frozenset(
    {"callback_url", "pdf_a", "tagged_pdf", "strict_fonts", "merge", "merge_failure_page"}
)
MAX_OPTION_BYTES = 4096
# Headers, boundaries and small extra fields around the file; the file alone gets the limit.
MULTIPART_OVERHEAD = 64 * 1024
# After refusing an oversized body, read on (discarding) this much more so the client sees the
# 413 instead of a reset connection; a client sending more than that is simply cut off.
DRAIN_LIMIT = 64 * 1024 * 1024
# Received bytes are parsed and handed to the store in batches, in a worker thread: one thread
# hop per request chunk (64 KiB) would cost more than the work itself. 4 MiB: a 12 MB upload
# takes 3 hops instead of 190.
WRITE_BATCH = 4 * 1024 * 1024
# Parts a request may carry beside its DOCX files: the zip ('file'), the job's options, and a few
# fields a web form may add. Every part costs parsing (an empty one about 150 bytes and 30 us),
# so parts are counted as they come, whatever their field.
EXTRA_PARTS = 16
# Each part's header lines, in size and number: python-multipart's defaults since 0.0.27, named
# here so the limits and their messages do not hang on the library's. A Content-Disposition
# with a 255-character file name fits, even percent-encoded.
MAX_HEADER_LINE = 4096 + 128
MAX_HEADERS = 8
# Entries of the zip built from ``files`` get a fixed time, so the same files make the same zip.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class ReceivedUpload:
    bytes_stored: int
    options: dict[str, str]  # the option form fields, as sent
    digest: str | None  # of everything received, when asked for (Idempotency-Key)


class _ZipBuffer:
    """What zipfile writes the ``files`` zip into: bytes wait here until the next store write.

    It has no ``tell`` or ``seek``, so zipfile writes a streaming zip (sizes and CRC in data
    descriptors after each entry), never going back over what was already sent.
    """

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _State:
    """What the parser callbacks learned so far."""

    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    target: str | None = None  # "zip", "docx", an option's name, or None (ignored part)
    zip_seen: bool = False
    parts: int = 0
    docx_count: int = 0
    options: dict[str, bytearray] = field(default_factory=dict)
    pending: list[bytes | memoryview] = field(default_factory=list)
    file_bytes: int = 0  # of the upload itself, parsed so far
    zip_buffer: _ZipBuffer = field(default_factory=_ZipBuffer)
    docx_zip: zipfile.ZipFile | None = None
    docx_entry: IO[bytes] | None = None
    digest: Any = None  # a hashlib object, or None


def _disposition(headers: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """The part's field name and file name."""
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        return None, None
    _, options = parse_options_header(disposition)
    name, filename = options.get(b"name"), options.get(b"filename")
    return (
        name.decode("utf-8", "replace") if name is not None else None,
        filename.decode("utf-8", "replace") if filename is not None else None,
    )


def _docx_name(filename: str) -> str:
    # Browsers send a bare name; other clients may send a path. Keep the last component only:
    # the result zip mirrors names, and a multipart file name is not a folder layout.
    return posixpath.basename(filename.replace("\\", "/")).strip()


async def drain(stream_iter: Any) -> None:
    """Read on (discarding, up to DRAIN_LIMIT) so a refused client reads the answer."""
    drained = 0
    try:
        async for chunk in stream_iter:
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                return
    except ClientDisconnect:
        return


def write_pieces(writer: ObjectWriter, pieces: list[bytes | memoryview]) -> None:
    """Each received piece to the writer as it is: joining them first would make a fresh
    multi-megabyte buffer per batch, and on a VM touching fresh memory costs more than the
    write itself (receiving 12 MB: 19 -> 7 ms of CPU)."""
    for piece in pieces:
        writer.write(piece)


def _take_pending(state: _State) -> list[bytes | memoryview]:
    if state.zip_buffer.data:
        state.pending.append(bytes(state.zip_buffer.data))
        state.zip_buffer.data.clear()
    pieces, state.pending = state.pending, []
    return pieces


def _malformed(error: MultipartParseError) -> UploadRejected:
    text = str(error)
    if "header size" in text:
        message = f"A part's header line is longer than {MAX_HEADER_LINE} bytes."
    elif "header count" in text:
        message = f"A part has more than {MAX_HEADERS} header lines."
    else:
        message = f"The multipart body is malformed ({text})."
    return UploadRejected(400, message)


async def receive_upload(
    request: Request,
    store: ObjectStore,
    key: str,
    max_bytes: int,
    max_files: int,
    *,
    digest: bool = False,
) -> ReceivedUpload:
    """Stream the request's zip (field ``file``) or DOCX files (``files``) into ``key`` as a zip.

    Raises UploadRejected (and leaves nothing in the store) when the request is not a
    multipart upload with one of those fields, carries more than ``max_bytes``, more than
    ``max_files`` files or EXTRA_PARTS other parts, or part headers past the limits.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRejected(
            415,
            "Send multipart/form-data with a zip in the field 'file' or .docx files in the field "
            "'files' (or JSON with an upload_id).",
        )
    too_large = UploadRejected(413, f"The upload is larger than the limit of {max_bytes} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise too_large

    state = _State(digest=hashlib.sha256() if digest else None)
    max_parts = max_files + EXTRA_PARTS

    def on_part_begin() -> None:
        # Counted here, as each part begins: tens of thousands of empty parts are cheap to send
        # and cost the server parsing time (and, in 'files', a zip entry each).
        state.parts += 1
        if state.parts > max_parts:
            raise UploadRejected(
                413,
                f"The multipart body has more than {max_parts} parts; at most {max_files} "
                "files are accepted per job.",
            )
        state.headers = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        name, filename = _disposition(state.headers)
        state.target = None
        if name == ZIP_FIELD and not state.zip_seen:
            # Only the first 'file' part is the upload; a second one is read past and dropped.
            if state.docx_count:
                raise UploadRejected(400, "Send either a zip in 'file' or .docx files in 'files'.")
            state.zip_seen, state.target = True, "zip"
        elif name == DOCX_FIELD and filename:
            _begin_docx(_docx_name(filename))
        elif name in OPTION_FIELDS and filename is None:
            if name in state.options:
                # One value each: which of several would win is nobody's intent.
                raise UploadRejected(400, f"The form field {name!r} is sent more than once.")
            state.target = name
            state.options[name] = bytearray()
        if state.digest is not None and state.target is not None:
            state.digest.update(f"\0{state.target}\0{filename or ''}\0".encode())

    def _begin_docx(name: str) -> None:
        if state.zip_seen:
            raise UploadRejected(400, "Send either a zip in 'file' or .docx files in 'files'.")
        if not is_document_name(name):
            raise UploadRejected(
                400,
                f"The part {name!r} in the field 'files' is not a .docx, .docm, .doc, .rtf or "
                ".odt file.",
            )
        if state.docx_count == max_files:
            raise UploadRejected(
                413,
                f"The request holds more than {max_files} .docx files in 'files'; the limit is "
                f"{max_files} per job.",
            )
        if state.docx_zip is None:
            state.docx_zip = zipfile.ZipFile(state.zip_buffer, "w")
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
        info.compress_type = zipfile.ZIP_STORED  # DOCX files are zips already
        with warnings.catch_warnings():
            # Two parts may share a name; entries are told apart by position, as in any zip.
            warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
            # force_zip64: the size is not known until the part ends, and may pass 2 GiB.
            state.docx_entry = state.docx_zip.open(info, "w", force_zip64=True)
        state.docx_count += 1
        state.target = "docx"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.target is None:
            return
        chunk = memoryview(data)[start:end]  # no copy: the store writes the pieces as they are
        if state.digest is not None:
            state.digest.update(chunk)
        if state.target == "zip":
            state.pending.append(chunk)
            state.file_bytes += end - start
        elif state.target == "docx":
            assert state.docx_entry is not None
            state.docx_entry.write(chunk)
            state.file_bytes += end - start
        else:
            value = state.options[state.target]
            value += chunk
            if len(value) > MAX_OPTION_BYTES:
                raise UploadRejected(400, f"The form field {state.target!r} is too long.")

    def on_part_end() -> None:
        if state.target == "docx" and state.docx_entry is not None:
            state.docx_entry.close()
            state.docx_entry = None
        state.target = None

    try:
        parser = MultipartParser(
            options[b"boundary"],
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
            max_header_count=MAX_HEADERS,
            max_header_size=MAX_HEADER_LINE,
        )
    except FormParserError as error:  # a boundary longer than the library takes
        raise UploadRejected(400, f"The multipart boundary is refused ({error}).") from None
    writer = store.open_writer(key, "application/zip")

    # Parsing is pure Python and costs CPU in proportion to the parts and their headers (a
    # 50,000-part body: seconds), so it runs in a worker thread with the store write that
    # follows it, never on the event loop, where every other request would wait for it.
    def parse(chunks: list[bytes]) -> None:
        for chunk in chunks:
            parser.write(chunk)
            if state.file_bytes > max_bytes:
                raise too_large
        write_pieces(writer, _take_pending(state))

    def finish(chunks: list[bytes]) -> None:
        parse(chunks)
        parser.finalize()
        if not state.zip_seen and not state.docx_count:
            raise UploadRejected(
                400, "The multipart body has no zip in the field 'file' and no 'files'."
            )
        if state.docx_zip is not None:
            state.docx_zip.close()  # writes the central directory into the buffer
        write_pieces(writer, _take_pending(state))
        writer.commit()

    received = 0
    batch: list[bytes] = []
    batch_bytes = 0
    stream = request.stream()
    try:
        try:
            async for chunk in stream:
                received += len(chunk)
                if received > max_bytes + MULTIPART_OVERHEAD:
                    raise too_large
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= WRITE_BATCH:
                    # Awaited before receiving more: parsing and writing one batch while
                    # receiving the next measured slower.
                    chunks, batch, batch_bytes = batch, [], 0
                    await run_in_threadpool(parse, chunks)
            await run_in_threadpool(finish, batch)
        except MultipartParseError as error:
            await drain(stream)
            raise _malformed(error) from None
        except UploadRejected:
            # Refused before the body ended: let the client finish sending so it reads the
            # answer instead of a reset connection.
            await drain(stream)
            raise
    except ClientDisconnect:
        await run_in_threadpool(writer.abort)
        raise UploadRejected(400, "The client disconnected before the upload finished.") from None
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return ReceivedUpload(
        bytes_stored=writer.bytes_written,
        options={name: value.decode("utf-8", "replace") for name, value in state.options.items()},
        digest=state.digest.hexdigest() if state.digest is not None else None,
    )
