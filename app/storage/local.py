"""The embedded default's object store: a directory tree; the API serves its signed URLs."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from app.storage.base import ObjectNotFound, StoreError

# Relative (no leading slash), so joining it to a public URL with a path prefix keeps the prefix.
BLOB_ROUTE = "api/v1/blobs/"


def sign_blob(secret: str, key: str, expires: int, filename: str, content_type: str) -> str:
    message = "\n".join((key, str(expires), filename, content_type)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_put(secret: str, key: str, expires: int, max_bytes: int) -> str:
    # A leading "PUT" keeps a download signature from ever passing as an upload one.
    message = "\n".join(("PUT", key, str(expires), str(max_bytes))).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _is_partial(path: Path) -> bool:
    """A LocalWriter's file before its commit (``.{name}.{hex}.part``)."""
    return path.name.startswith(".") and path.name.endswith(".part")


class LocalWriter:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: two writers of one key never see each other's half-written bytes.
        self.partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        self.handle: BinaryIO | None = open(self.partial, "wb")  # noqa: SIM115 - closed in commit/abort
        self.bytes_written = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self.handle is not None, "writer already closed"
        self.handle.write(data)
        self.bytes_written += len(data)

    def commit(self) -> None:
        assert self.handle is not None, "writer already closed"
        self.handle.close()
        self.handle = None
        os.replace(self.partial, self.final)

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.partial.unlink(missing_ok=True)


class LocalStore:
    def __init__(self, root: Path, secret: str) -> None:
        self.root = root.resolve()
        self.secret = secret
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StoreError(f"invalid key: {key!r}", transient=False)
        return path

    def open_writer(self, key: str, content_type: str) -> LocalWriter:
        return LocalWriter(self.path(key))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        writer = self.open_writer(key, content_type)
        writer.write(data)
        writer.commit()

    def put_file(self, key: str, path: str, content_type: str) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        try:
            try:
                os.link(path, partial)  # scratch usually shares the disk: no bytes to copy
            except OSError:
                shutil.copyfile(path, partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open_reader(key) as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def download_file(self, key: str, path: str) -> None:
        source = self.path(key)
        try:
            try:
                # Objects are never modified in place (writes replace them), so a link is as
                # good as a copy and costs nothing when scratch shares the store's disk.
                os.link(source, path)
            except FileNotFoundError:
                raise
            except OSError:
                shutil.copyfile(source, path)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        # Quire's prefixes are whole folders (``jobs/{id}/``) or a single object.
        path = self.path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        # Prefixes are folders here too (``uploads/``); partial files are not objects yet.
        for path in sorted(self.path(prefix.rstrip("/")).rglob("*")):
            with contextlib.suppress(FileNotFoundError):  # removed while listed
                if path.is_file() and not _is_partial(path):
                    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    yield path.relative_to(self.root).as_posix(), written

    def abort_unfinished_writes(self, prefix: str, idle_since: datetime) -> int:
        aborted = 0
        for path in self.path(prefix.rstrip("/")).rglob(".*.part"):
            # A live writer appends to its file as bytes arrive: the time it was last written
            # tells a dead one from a slow one.
            with contextlib.suppress(FileNotFoundError):
                if datetime.fromtimestamp(path.stat().st_mtime, UTC) < idle_since:
                    path.unlink()
                    aborted += 1
        return aborted

    def presigned_get_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode(
            {
                "expires": expires,
                "filename": filename,
                "content_type": content_type,
                "signature": sign_blob(self.secret, key, expires, filename, content_type),
            }
        )
        return f"{BLOB_ROUTE}{quote(key)}?{query}"

    def presigned_put_url(
        self, key: str, *, content_type: str, expires_in: int, max_bytes: int
    ) -> str:
        """A signed URL the API accepts a PUT of at most ``max_bytes`` on, until it expires."""
        expires = int(time.time()) + expires_in
        query = urlencode(
            {
                "expires": expires,
                "max_bytes": max_bytes,
                "signature": sign_put(self.secret, key, expires, max_bytes),
            }
        )
        return f"{BLOB_ROUTE}{quote(key)}?{query}"

    def verify_put(self, key: str, expires: int, max_bytes: int, signature: str) -> bool:
        expected = sign_put(self.secret, key, expires, max_bytes)
        return hmac.compare_digest(expected, signature) and expires >= time.time()

    def verify(
        self, key: str, expires: int, filename: str, content_type: str, signature: str
    ) -> bool:
        expected = sign_blob(self.secret, key, expires, filename, content_type)
        return hmac.compare_digest(expected, signature) and expires >= time.time()

    def api_served_urls(self) -> LocalStore:
        return self

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"local store {self.root} is not writable", transient=False)
