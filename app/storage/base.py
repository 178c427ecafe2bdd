"""The object store interface every part of Quire talks to, and the one place keys are built.

Keys are made only from ids that Quire generated, never from names found inside an upload.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol


class StoreError(Exception):
    """The object store failed; ``transient`` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectNotFound(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}", transient=False)
        self.key = key


def upload_key(job_id: str) -> str:
    return f"uploads/{job_id}/source.zip"


def input_key(job_id: str, file_id: str) -> str:
    return f"jobs/{job_id}/input/{file_id}.docx"


def output_key(job_id: str, file_id: str) -> str:
    return f"jobs/{job_id}/output/{file_id}.pdf"


def result_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.zip"


def merged_key(job_id: str) -> str:
    """The job's one merged PDF (``merge=true``)."""
    return f"jobs/{job_id}/merged.pdf"


def job_prefixes(job_id: str) -> tuple[str, ...]:
    return (f"uploads/{job_id}/", f"jobs/{job_id}/")


class ObjectWriter(Protocol):
    """A streaming write: bytes go out as they come; the object appears only on ``commit``."""

    bytes_written: int

    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class WriterScope:
    """``with store.writer(key) as w``: commits when the block ends, aborts on error."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer

    def __enter__(self) -> ObjectWriter:
        return self.writer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.writer.commit()
        else:
            self.writer.abort()


class ApiServedUrls(Protocol):
    """What the API needs to serve a store's presigned URLs itself (``/api/v1/blobs``)."""

    def verify(
        self, key: str, expires: int, filename: str, content_type: str, signature: str
    ) -> bool: ...
    def verify_put(self, key: str, expires: int, max_bytes: int, signature: str) -> bool: ...
    def path(self, key: str) -> Path:
        """The file holding the object (which may not exist)."""
        ...


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...
    def put_file(self, key: str, path: str, content_type: str) -> None: ...
    def open_writer(self, key: str, content_type: str) -> ObjectWriter: ...
    def open_reader(self, key: str) -> BinaryIO:
        """A seekable reader: the zip listing reads only the central directory through it."""
        ...

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]: ...
    def download_file(self, key: str, path: str) -> None: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every finished object under ``prefix``: its key and when it was written (UTC)."""
        ...

    def abort_unfinished_writes(self, prefix: str, idle_since: datetime) -> int:
        """End the writes under ``prefix`` that never finished and have written nothing since
        ``idle_since`` (UTC): what a writer that died left (a local partial file, an S3
        multipart upload and its parts). Returns how many it ended."""
        ...

    def presigned_get_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str:
        """An expiring URL for the object; may be relative to the API's own base URL."""
        ...

    def presigned_put_url(
        self, key: str, *, content_type: str, expires_in: int, max_bytes: int
    ) -> str:
        """An expiring URL a client PUTs the object's bytes to (direct uploads); may be relative
        to the API's own base URL. Stores that cannot bound the size ignore ``max_bytes``."""
        ...

    def api_served_urls(self) -> ApiServedUrls | None:
        """How to check this store's presigned URLs when they point at the API itself (the
        local store has no server of its own); None when the store serves them (S3)."""
        ...

    def free_bytes(self) -> int | None:
        """Bytes free on the disk the objects are written to, when that is this machine's (the
        API refuses uploads when it runs low); None when the store keeps its own space (S3)."""
        ...

    def check(self) -> None:
        """Raise StoreError when the store cannot be reached (readiness probe)."""
        ...
