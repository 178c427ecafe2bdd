"""Both object stores behind the one interface: streaming writes, ranged reads, signed URLs."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.storage import ObjectNotFound, StoreError, WriterScope, get_store
from app.storage.s3 import PART_SIZE
from tests.conftest import Backend


def test_streamed_write_of_several_parts_reads_back_whole(backend: Backend) -> None:
    store = get_store()
    data = os.urandom(PART_SIZE * 2 + 12345)  # three multipart parts on S3
    with WriterScope(store.open_writer("t/big.bin", "application/octet-stream")) as writer:
        for start in range(0, len(data), 1_000_000):
            writer.write(data[start : start + 1_000_000])
    assert writer.bytes_written == len(data)
    assert store.size("t/big.bin") == len(data)
    assert b"".join(store.iter_chunks("t/big.bin", 3_000_000)) == data


def test_an_aborted_write_leaves_no_object(backend: Backend) -> None:
    store = get_store()
    with pytest.raises(RuntimeError), WriterScope(store.open_writer("t/x.bin", "x/y")) as writer:
        writer.write(os.urandom(PART_SIZE + 1))
        raise RuntimeError("client went away")
    assert not store.exists("t/x.bin")
    with pytest.raises(ObjectNotFound):
        store.size("t/x.bin")


def test_the_reader_seeks_so_zipfile_reads_only_what_it_needs(backend: Backend) -> None:
    store = get_store()
    members = {f"dir/{i}.bin": os.urandom(50_000) for i in range(20)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    store.put_bytes("t/a.zip", buffer.getvalue(), "application/zip")
    with store.open_reader("t/a.zip") as source, zipfile.ZipFile(source) as archive:
        assert archive.read("dir/13.bin") == members["dir/13.bin"]
        assert archive.read("dir/2.bin") == members["dir/2.bin"]
    with pytest.raises(ObjectNotFound):
        store.open_reader("t/missing.zip")


def test_delete_prefix_removes_a_whole_job(backend: Backend) -> None:
    store = get_store()
    for key in ("jobs/j1/input/a.docx", "jobs/j1/output/a.pdf", "jobs/j2/result.zip"):
        store.put_bytes(key, b"x", "application/octet-stream")
    store.delete_prefix("jobs/j1/")
    assert not store.exists("jobs/j1/input/a.docx")
    assert not store.exists("jobs/j1/output/a.pdf")
    assert store.exists("jobs/j2/result.zip")


def test_presigned_urls_serve_the_object_as_an_attachment(backend: Backend) -> None:
    store = get_store()
    store.put_bytes("t/r.zip", b"zip bytes", "application/zip")
    url = store.presigned_get_url(
        "t/r.zip", filename="r.zip", content_type="application/zip", expires_in=60
    )
    if backend.name == "sqlite-local":
        # The API serves these; tests/app/test_api.py fetches them. Here: the signature binds
        # the key, the expiry, the file name and the type.
        assert url.startswith("api/v1/blobs/t/r.zip?")
        assert "signature=" in url and "filename=r.zip" in url
        return
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"zip bytes"
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]


def test_the_store_says_whether_the_api_serves_its_urls_and_shares_its_disk(
    backend: Backend,
) -> None:
    store = get_store()
    urls = store.api_served_urls()
    if backend.name == "postgres-s3":
        # The S3 server checks its own presigned URLs and keeps its own space.
        assert urls is None
        assert store.free_bytes() is None
        return
    assert urls is not None
    free = store.free_bytes()
    assert free is not None and free > 0
    store.put_bytes("t/r.pdf", b"%PDF", "application/pdf")
    url = store.presigned_get_url(
        "t/r.pdf", filename="r.pdf", content_type="application/pdf", expires_in=60
    )
    query = dict(httpx.URL(url).params)
    assert urls.verify(
        "t/r.pdf", int(query["expires"]), "r.pdf", "application/pdf", query["signature"]
    )
    assert not urls.verify(
        "t/r.pdf", int(query["expires"]), "x.pdf", "application/pdf", query["signature"]
    )
    assert urls.path("t/r.pdf").read_bytes() == b"%PDF"


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)
def test_local_keys_cannot_escape_the_store(backend: Backend) -> None:
    from app.storage import LocalStore, StoreError

    store = get_store()
    assert isinstance(store, LocalStore)
    for key in ("../outside", "/etc/passwd", "jobs/../../x"):
        with pytest.raises(StoreError):
            store.path(key)


def test_list_objects_names_finished_objects_only_with_when_they_were_written(
    backend: Backend,
) -> None:
    store = get_store()
    before = datetime.now(UTC) - timedelta(seconds=5)  # S3 times have whole seconds
    store.put_bytes("uploads/a/source.zip", b"a", "application/zip")
    store.put_bytes("uploads/b/source.zip", b"b", "application/zip")
    store.put_bytes("jobs/a/result.zip", b"r", "application/zip")
    unfinished = store.open_writer("uploads/c/source.zip", "application/zip")
    unfinished.write(os.urandom(PART_SIZE + 1))  # on S3, a multipart upload with one part
    listed = dict(store.list_objects("uploads/"))
    assert sorted(listed) == ["uploads/a/source.zip", "uploads/b/source.zip"]
    for written in listed.values():
        assert written.tzinfo is not None and written > before
    unfinished.abort()
    assert list(store.list_objects("nothing-here/")) == []


def test_unfinished_writes_are_ended_once_idle_since_the_given_time(backend: Backend) -> None:
    store = get_store()
    store.put_bytes("uploads/done/source.zip", b"done", "application/zip")
    dead = store.open_writer("uploads/dead/source.zip", "application/zip")
    dead.write(os.urandom(PART_SIZE + 1))  # its writer dies here, as the API under SIGKILL
    # Written to a moment ago: it may be a slow client's, so it is left alone.
    assert store.abort_unfinished_writes("uploads/", datetime.now(UTC) - timedelta(hours=1)) == 0
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert store.abort_unfinished_writes("uploads/", later) == 1
    assert store.abort_unfinished_writes("uploads/", later) == 0  # nothing of it is left
    with pytest.raises((StoreError, OSError)):
        dead.commit()  # the write cannot be finished any more
    assert not store.exists("uploads/dead/source.zip")
    assert store.exists("uploads/done/source.zip")
