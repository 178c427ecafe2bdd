"""End to end, on the embedded default and on PostgreSQL + S3: API keys, a direct upload to the
store, output options, Idempotency-Key, the jobs list and per-file downloads (issue #5)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import Service
from tests.e2e.helpers import compose_like_env, embedded_env
from tests.pdf import pdf_pages

pytestmark = pytest.mark.e2e

KEY = "e2e-key-5c1d0a"


def pdf_a_part(pdf: bytes) -> str | None:
    """The PDF/A part its XMP metadata claims, if any."""
    root = PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    if "/Metadata" not in root:
        return None
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8", "replace")
    found = re.search(r'pdfaid:part(?:>|=")(\d)', xmp)
    return found.group(1) if found else None


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3-redis"])
def test_direct_upload_with_options_keys_and_per_file_downloads(
    stack: str, request: pytest.FixtureRequest, make_service: Callable[[dict[str, str]], Service]
) -> None:
    env = embedded_env() if stack == "embedded" else compose_like_env(request)
    service = make_service({**env, "QUIRE_API_KEYS": KEY})
    service.start()
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as api:
        check_features(service, api)
    assert service.stop() == 0


def check_features(service: Service, api: httpx.Client) -> None:
    assert httpx.get(f"{service.url}/api/v1/jobs").status_code == 401

    data = make_zip({"one.docx": make_docx("First", "Second"), "broken.docx": b"junk"})
    offer = api.post("/api/v1/uploads", json={"size": len(data)})
    assert offer.status_code == 201, offer.text
    upload = offer.json()
    # The PUT goes to the store (S3) or to the API's signed URL, never with the API key.
    put = httpx.put(upload["url"], content=data, headers=upload["headers"], timeout=60)
    assert put.status_code == 200, put.text

    submission = {"upload_id": upload["upload_id"], "pdf_a": "2b", "tagged_pdf": True}
    created = api.post("/api/v1/jobs", json=submission, headers={"Idempotency-Key": "k1"})
    assert created.status_code == 202, created.text
    replay = api.post("/api/v1/jobs", json=submission, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.json() == created.json()
    job_id = created.json()["job_id"]

    status: dict[str, Any] = service.wait_for_job(job_id, headers=dict(api.headers))
    assert status["status"] == "COMPLETED", status
    assert status["options"] == {
        "pdf_a": "2b",
        "tagged_pdf": True,
        "strict_fonts": False,
        "merge": False,
        "merge_failure_page": True,
    }
    files = {f["filename"]: f for f in status["files"]}
    assert (
        files["broken.docx"]["status"] == "FAILED" and files["broken.docx"]["download_url"] is None
    )

    # The per-file URL is presigned: fetched without the API key.
    pdf = httpx.get(files["one.docx"]["download_url"], timeout=60)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert [("First" in t, "Second" in t) for t in pdf_pages(pdf.content)] == [
        (True, False),
        (False, True),
    ]
    assert pdf_a_part(pdf.content) == "2"
    assert "/StructTreeRoot" in PdfReader(io.BytesIO(pdf.content)).trailer["/Root"]
    redirect = api.get(f"/api/v1/jobs/{job_id}/files/{files['one.docx']['file_id']}")
    assert redirect.status_code == 307
    assert httpx.get(redirect.headers["location"], timeout=60).content == pdf.content

    listed = api.get("/api/v1/jobs", params={"status": "COMPLETED"}).json()
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]
    other = httpx.get(
        f"{service.url}/api/v1/jobs/{job_id}", headers={"Authorization": "Bearer nope"}
    )
    assert other.status_code == 403
