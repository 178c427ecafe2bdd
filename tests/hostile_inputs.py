"""Generators of hostile uploads, for the bounded-parsing tests and the hostile-input ledger.

Each generator builds its bytes by hand (never through zipfile or an HTTP client's form
encoder), so the input is exactly as hostile as described and as cheap to make as possible:
a 300,000-record zip takes milliseconds. ``HOSTILE_REQUESTS`` names each kind with a ready
``POST /api/v1/jobs`` request, so a ledger can send every kind the same way and record what
came back (count tried, PDFs leaked, 5xx answers, the API's peak RSS).
"""

from __future__ import annotations

import importlib.util
import io
import struct
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

# uvicorn probes for the optional a2wsgi with `except ModuleNotFoundError`, but LibreOffice's uno
# module (which the suite's fixtures import first) hooks __import__ and turns that error into a
# plain ImportError. Marking the absent module absent makes the probe fail as uvicorn expects.
if importlib.util.find_spec("a2wsgi") is None:
    sys.modules.setdefault("a2wsgi", None)  # type: ignore[arg-type]  # None marks it absent

import uvicorn

from tests.docx_factory import make_docx
from tests.services import free_port

# The zip format's records (APPNOTE 4.3.7, 4.3.12, 4.3.14-4.3.16).
LOCAL = struct.Struct("<4s5H3L2H")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes: every central record is at least this
EOCD = struct.Struct("<4s4H2LH")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
UNKNOWN_EXTRA = 0xCAFE  # an extra field's type that no reader interprets, so any length is valid
BOUNDARY = "quire-hostile-boundary"
JOBS_PATH = "/api/v1/jobs"


def _central(name: bytes, *, extra: bytes = b"", comment: bytes = b"") -> bytes:
    """One central record of an empty stored file whose local header is at offset 0."""
    fixed = CENTRAL.pack(
        b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, 0, 0, 0,
        len(name), len(extra), len(comment), 0, 0, 0o100644 << 16, 0,
    )  # fmt: skip
    return fixed + name + extra + comment


def _zip(records: bytes, *, declared: int, zip64: bool) -> bytes:
    """A zip whose one real entry (empty, at offset 0) is listed by every one of the central
    ``records``, and whose end record declares ``declared`` entries."""
    name = b"a.docx"
    local = LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0) + name
    directory_offset = len(local)
    end_offset = directory_offset + len(records)
    tail = b""
    if zip64:
        # The classic end record says "see the Zip64 record" in every field, as writers do once
        # a count or size overflows; the Zip64 record then carries the (lying) count.
        tail = ZIP64_EOCD.pack(
            b"PK\x06\x06", ZIP64_EOCD.size - 12, 45, 45, 0, 0,
            declared, declared, len(records), directory_offset,
        ) + ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end_offset, 1)  # fmt: skip
        declared, size, offset = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        size, offset = len(records), directory_offset
    end = EOCD.pack(b"PK\x05\x06", 0, 0, declared, declared, size, offset, 0)
    return local + records + tail + end


def lying_zip(
    records: int = 300_000, *, name: bytes = b"a.docx", declared: int = 1, zip64: bool = False
) -> bytes:
    """A zip whose end record declares ``declared`` entries while its central directory holds
    ``records`` of the smallest kind (46 bytes and the name): 300,000 make about 15 MB.

    The name decides where a reader that stops at a limit stops: a ``.docx`` name counts
    against the files of a job, a folder name (``b"d/"``) only against the entries.
    """
    return _zip(_central(name) * records, declared=declared, zip64=zip64)


def huge_directory_zip(
    records: int = 400,
    *,
    name_bytes: int = 65_535,
    extra_bytes: int = 65_535,
    comment_bytes: int = 65_535,
    zip64: bool = False,
) -> bytes:
    """A zip that declares its entries honestly but whose records are as large as the format
    allows (64 KiB name, extra field and comment each): 400 make a 78 MB central directory
    for a job of only 400 .docx files. The extra field is well-formed, so zipfile takes it."""
    name = b"d" * (name_bytes - len(b".docx")) + b".docx"
    extra = struct.pack("<HH", UNKNOWN_EXTRA, extra_bytes - 4) + b"\0" * (extra_bytes - 4)
    record = _central(name, extra=extra, comment=b"c" * comment_bytes)
    return _zip(record * records, declared=records, zip64=zip64)


@dataclass(frozen=True)
class MultipartBody:
    content_type: str
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": self.content_type, "content-length": str(len(self.body))}

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        """The body in pieces, as a client streaming it without a Content-Length would."""
        view = memoryview(self.body)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])


def _part(disposition: str, data: bytes, *, extra_header: str = "") -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n{extra_header}"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def _body(parts: list[bytes] | bytes) -> MultipartBody:
    joined = parts if isinstance(parts, bytes) else b"".join(parts)
    return MultipartBody(
        f"multipart/form-data; boundary={BOUNDARY}", joined + f"--{BOUNDARY}--\r\n".encode()
    )


def zip_upload(data: bytes, filename: str = "batch.zip") -> MultipartBody:
    """A zip in the field ``file``, the way a client submits a job."""
    return _body([_part(f'name="file"; filename="{filename}"', data)])


def many_parts(
    parts: int = 50_000, *, field: str = "files", filename: str = "a.docx"
) -> MultipartBody:
    """``parts`` empty file parts (about 150 bytes each: 50,000 make 7.4 MB). ``field="files"``
    makes each one a DOCX of the job; any other field name makes parts the server ignores."""
    return _body(_part(f'name="{field}"; filename="{filename}"', b"") * parts)


def long_header(header_bytes: int = 64 * 1024, data_bytes: int = 0) -> MultipartBody:
    """One part whose Content-Disposition line is ``header_bytes`` long (a 64 KiB file name),
    followed by ``data_bytes`` of data: a client still sending when the server refuses."""
    padding = header_bytes - len('Content-Disposition: form-data; name="file"; filename=".zip"')
    disposition = f'name="file"; filename="{"x" * padding}.zip"'
    return _body([_part(disposition, b"\0" * data_bytes)])


def many_headers(headers: int = 9) -> MultipartBody:
    """One part with ``headers`` header lines (Content-Disposition, Content-Type and fillers)."""
    fillers = "".join(f"X-Filler-{index}: x\r\n" for index in range(headers - 2))
    return _body([_part('name="file"; filename="a.zip"', b"", extra_header=fillers)])


@dataclass(frozen=True)
class HostileRequest:
    """One kind of hostile input as a ``POST /api/v1/jobs``, with the answer it must get."""

    kind: str
    body: MultipartBody
    expected_status: int
    method: str = "POST"
    path: str = JOBS_PATH


# Built on demand: the zips are megabytes each. The expected statuses hold with the default
# limits (QUIRE_MAX_FILES_PER_JOB 10,000; QUIRE_MAX_UPLOAD_BYTES 2 GiB).
HOSTILE_REQUESTS: dict[str, Callable[[], HostileRequest]] = {
    "lying-zip": lambda: HostileRequest("lying-zip", zip_upload(lying_zip()), 413),
    "lying-zip64": lambda: HostileRequest("lying-zip64", zip_upload(lying_zip(zip64=True)), 413),
    "lying-zip-folders": lambda: HostileRequest(
        "lying-zip-folders", zip_upload(lying_zip(name=b"d/")), 413
    ),
    "huge-central-directory": lambda: HostileRequest(
        "huge-central-directory", zip_upload(huge_directory_zip()), 413
    ),
    "many-files-parts": lambda: HostileRequest("many-files-parts", many_parts(), 413),
    "many-ignored-parts": lambda: HostileRequest(
        "many-ignored-parts", many_parts(field="other"), 413
    ),
    "long-part-header": lambda: HostileRequest("long-part-header", long_header(), 400),
}


@dataclass
class ReadCounter:
    """Counts the bytes read through every reader a store opens: ``store.open_reader =
    counter.wrap(store.open_reader)``. What the code under test asked for, not what a buffered
    reader below fetched ahead (S3's reader fetches 4 MiB blocks)."""

    readers: list[CountingReader] = field(default_factory=list)

    @property
    def bytes_read(self) -> int:
        return sum(reader.bytes_read for reader in self.readers)

    def wrap(self, open_reader: Callable[[str], IO[bytes]]) -> Callable[[str], IO[bytes]]:
        def opened(key: str) -> IO[bytes]:
            reader = CountingReader(open_reader(key))
            self.readers.append(reader)
            return reader  # type: ignore[return-value]  # duck-typed: what zipfile and the listing use

        return opened


class CountingReader:
    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread of this process
    (so fixtures that patch this process apply to it); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,  # leave this process's logging as the app and pytest set it
        timeout_graceful_shutdown=2,  # open event streams would hold the shutdown forever
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# -- DOCX bombs: parts that expand far beyond their compressed size ----------------------------


def zeros_deflated(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 1 MiB) and its CRC-32, built
    in well under a second for gigabytes: one MiB compressed after a full flush (which resets
    the compressor) is the same bytes every time, so it is repeated."""
    mib = bytes(1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // len(mib)):
        crc = zlib.crc32(mib, crc)
    return piece * (size // len(mib)) + b"\x03\x00", crc


def docx_with_bombs(*sizes: int) -> bytes:
    """A valid DOCX plus one part of zeros per size, each honestly declared in its headers."""
    return package_with_bombs(make_docx("a bomb rides along"), "word/media/", *sizes)


def package_with_bombs(package_bytes: bytes, folder: str, *sizes: int) -> bytes:
    """The zip package (a DOCX, an ODT) plus one part of zeros per size in ``folder``, each
    honestly declared in its headers."""
    buffer = io.BytesIO()
    buffer.write(package_bytes)
    with zipfile.ZipFile(buffer, "a") as package:
        for index, size in enumerate(sizes):
            stream, crc = zeros_deflated(size)
            info = zipfile.ZipInfo(f"{folder}bomb{index}.bin", date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # zipfile cannot write a stream compressed elsewhere: write the local header, the
            # stream and the central directory entry the way ZipFile.write would.
            info.file_size, info.compress_size, info.CRC = size, len(stream), crc
            info.header_offset = package.fp.tell()  # type: ignore[union-attr]
            package.fp.write(info.FileHeader())  # type: ignore[union-attr]
            package.fp.write(stream)  # type: ignore[union-attr]
            package.start_dir = package.fp.tell()  # type: ignore[union-attr]
            package.filelist.append(info)
            package.NameToInfo[info.filename] = info
            package._didModify = True  # type: ignore[attr-defined]
    return buffer.getvalue()
