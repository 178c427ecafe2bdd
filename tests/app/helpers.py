"""Helpers shared by the tests of the HTTP API and of the state machine (tests/app and
tests/workers): a test module imports them from here, never from another test module."""

from __future__ import annotations

import zipfile

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from app import transitions
from app.db import session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import File
from app.storage import LocalStore, S3Store, get_store
from app.zipinput import DocxEntry
from tests.conftest import SentTasks
from tests.docx_factory import make_zip
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import FakeConverter

ZIP = "application/zip"


def post_zip(client: TestClient, data: bytes, field: str = "file") -> httpx.Response:
    return client.post("/api/v1/jobs", files={field: ("batch.zip", data, ZIP)})


def submit_documents(client: TestClient, entries: dict[str, bytes]) -> str:
    """The job id of a zip of these entries, accepted."""
    response = post_zip(client, make_zip(entries))
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert fragment in body["error"]["message"]


def finish(job_id: str, sent: SentTasks) -> None:
    """Run the job's tasks in-process with a fake converter (the API is under test here)."""
    from app.config import get_settings

    settings, store, converter = get_settings(), get_store(), FakeConverter()
    ingest_job(job_id, store, settings)
    for file_id in sent.conversions:
        convert_file(file_id, store, converter, settings)
    for archive_job in sent.archives:
        build_archive(archive_job, store)


def stored_keys(prefix: str) -> list[str]:
    """Every key under ``prefix``, asked of the store itself (a directory, or S3's listing)."""
    store = get_store()
    if isinstance(store, LocalStore):
        root = store.root / prefix
        return [str(p.relative_to(store.root)) for p in root.rglob("*") if p.is_file()]
    assert isinstance(store, S3Store)
    listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def put(client: TestClient, url: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
    """PUT where the offer says: the API itself (local store) or the S3 server."""
    if url.startswith("http://testserver/"):
        return client.put(url, content=data, headers=headers)
    return httpx.put(url, content=data, headers=headers)


def offer(client: TestClient, **body: object) -> dict[str, object]:
    response = client.post("/api/v1/uploads", json=body or None)
    assert response.status_code == 201, response.text
    return dict(response.json())


def make_job(count: int) -> tuple[str, list[str]]:
    """A started job of ``count`` pending files, made in the database alone: its id and the
    files' ids, in order."""
    job_id = new_job_id()
    entries = [
        DocxEntry(index=i, name=f"{i}.docx", info=zipfile.ZipInfo(f"{i}.docx"))
        for i in range(count)
    ]
    with session_scope() as session:
        create_job(session, JobSpec(job_id, upload_bytes=1), entries)
    with session_scope() as session:
        transitions.start_job(session, job_id)
        ids = list(
            session.scalars(select(File.id).where(File.job_id == job_id).order_by(File.position))
        )
    return job_id, ids
