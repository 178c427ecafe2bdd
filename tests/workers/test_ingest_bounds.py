"""The ingest bounds the stored zip's central directory before zipfile reads it (#12).

The API listed the upload before the 202, but the object the ingest reads need not be that
one: an S3 presigned PUT stays valid until it expires, so a direct upload can be replaced
after it became a job. A replacement that lies about its entry count must end the job FAILED
with a message, not take the worker down (and be sent again by the sweeper, and again).
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.config import get_settings
from app.db import session_scope
from app.models import File, Job, utcnow
from app.storage import S3Store, get_store, upload_key
from app.zipinput import DIRECTORY_CHUNK, EOCD_SEARCH
from tests.conftest import SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.hostile_inputs import CENTRAL, ReadCounter, lying_zip
from workers.ingest import ingest_job
from workers.sweeper import sweep


def direct_job(client: TestClient) -> tuple[str, dict[str, str]]:
    """A job made from a direct upload of two documents: its id, and the upload's offer."""
    good = make_zip({"a.docx": make_docx("a"), "b.docx": make_docx("b")})
    offer = client.post("/api/v1/uploads", json={"size": len(good)}).json()
    headers = dict(offer["headers"])
    put = client.put if offer["url"].startswith("http://testserver/") else httpx.put
    assert put(offer["url"], content=good, headers=headers).status_code == 200
    response = client.post("/api/v1/jobs", json={"upload_id": offer["upload_id"]})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"]), {"url": offer["url"], **headers}


def test_a_replaced_upload_lying_about_its_entries_fails_the_job_and_stays_failed(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, offer = direct_job(client)
    url = offer.pop("url")
    lying = lying_zip(300_000)  # 15 MB of directory declared as one entry
    store = get_store()
    if isinstance(store, S3Store):
        # Nothing stops a second PUT at a presigned S3 URL that has not expired.
        assert httpx.put(url, content=lying, headers=offer).status_code == 200
    else:
        # The local store refuses it (the upload is a job now); the ingest must hold whatever
        # reached the store all the same.
        assert client.put(url, content=lying, headers=offer).status_code == 409
        store.put_bytes(upload_key(job_id), lying, "application/zip")

    reads = ReadCounter()
    monkeypatch.setattr(store, "open_reader", reads.wrap(store.open_reader))
    ingest_job(job_id, store, get_settings())

    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "FAILED"
    assert status["error_message"] == (
        "The uploaded zip cannot be unpacked: The zip archive holds more than 10000 .docx "
        "files; the limit is 10000 per job."
    )
    assert {file["status"] for file in status["files"]} == {"FAILED"}
    assert sent.conversions == []
    # Up to the 10,001st record and a piece more, not the 15 MB directory (zipfile never ran).
    record = CENTRAL.size + len(b"a.docx")
    assert reads.bytes_read <= 10_001 * record + EOCD_SEARCH + 2 * DIRECTORY_CHUNK

    # Long after, the sweeper sends it nothing: the job ended.
    long_ago = utcnow() - timedelta(hours=2)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=long_ago))
        session.execute(update(File).where(File.job_id == job_id).values(touched_at=long_ago))
    sweep(get_settings())
    assert sent.ingests == [job_id]  # the API's one
    assert sent.conversions == []
