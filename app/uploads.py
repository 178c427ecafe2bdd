"""Receiving ``POST /api/v1/jobs``: the multipart body goes straight into the object store.

No ``UploadFile`` spooling and no whole-file buffer: each chunk the client sends is parsed and
written on (as one multipart upload part on S3), and the bytes are counted against the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from app.storage import ObjectStore, ObjectWriter
from app.zipinput import UploadRejected

FILE_FIELD = "file"
# Headers, boundaries and small extra fields around the file; the file alone gets the limit.
MULTIPART_OVERHEAD = 64 * 1024
# After refusing an oversized body, read on (discarding) this much more so the client sees the
# 413 instead of a reset connection; a client sending more than that is simply cut off.
DRAIN_LIMIT = 64 * 1024 * 1024
# Parsed bytes are handed to the store in batches: one thread hop per request chunk (64 KiB)
# would cost more than the write itself.
WRITE_BATCH = 1024 * 1024


@dataclass
class _PartState:
    """What the parser callbacks learned about the part being parsed."""

    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    in_file: bool = False
    file_seen: bool = False
    pending: list[memoryview] = field(default_factory=list)
    pending_bytes: int = 0
    file_bytes: int = 0  # of the file part, parsed so far


def _field_name(headers: dict[bytes, bytes]) -> str | None:
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        return None
    _, options = parse_options_header(disposition)
    name = options.get(b"name")
    return name.decode("utf-8", "replace") if name is not None else None


async def _drain(request: Request, stream_iter: object) -> None:
    drained = 0
    try:
        async for chunk in stream_iter:  # type: ignore[attr-defined]
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                return
    except ClientDisconnect:
        return


async def _write_pending(state: _PartState, writer: ObjectWriter) -> None:
    if state.pending:
        data = b"".join(state.pending)
        state.pending.clear()
        state.pending_bytes = 0
        # The store write may block (an S3 part upload): keep it off the event loop.
        await run_in_threadpool(writer.write, data)


async def receive_zip(request: Request, store: ObjectStore, key: str, max_bytes: int) -> int:
    """Stream the ``file`` field of the request into ``key``; return the bytes stored.

    Raises UploadRejected (and leaves nothing in the store) when the request is not a
    multipart upload with a ``file`` field or carries more than ``max_bytes``.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRejected(
            415, "Send the zip as multipart/form-data with the archive in the field 'file'."
        )
    too_large = UploadRejected(413, f"The upload is larger than the limit of {max_bytes} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise too_large

    state = _PartState()

    def on_part_begin() -> None:
        state.headers = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        # Only the first 'file' part is the upload; any other part is read past and dropped.
        state.in_file = _field_name(state.headers) == FILE_FIELD and not state.file_seen
        state.file_seen = state.file_seen or state.in_file

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.in_file:
            state.pending.append(memoryview(data)[start:end])  # no copy until the batch join
            state.pending_bytes += end - start
            state.file_bytes += end - start

    def on_part_end() -> None:
        state.in_file = False

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
    )
    writer = store.open_writer(key, "application/zip")
    received = 0
    stream = request.stream()
    try:
        async for chunk in stream:
            received += len(chunk)
            parser.write(chunk)
            if state.file_bytes > max_bytes or received > max_bytes + MULTIPART_OVERHEAD:
                await _drain(request, stream)
                raise too_large
            if state.pending_bytes >= WRITE_BATCH:
                await _write_pending(state, writer)
        parser.finalize()
        await _write_pending(state, writer)
        if not state.file_seen:
            raise UploadRejected(400, "The multipart body has no field named 'file'.")
        await run_in_threadpool(writer.commit)
    except ClientDisconnect:
        await run_in_threadpool(writer.abort)
        raise UploadRejected(400, "The client disconnected before the upload finished.") from None
    except MultipartParseError:
        await run_in_threadpool(writer.abort)
        raise UploadRejected(400, "The multipart body is malformed.") from None
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return writer.bytes_written
