"""End to end, on the embedded default and on PostgreSQL + S3: a job submitted with
``merge=true`` as several ``files`` parts, converted by the real workers and LibreOffice, gives
one PDF of the whole job in the parts' order, one bookmark per file and a last page for the
damaged one (issue #18 item 4)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from tests.docx_factory import bad_documents, make_docx
from tests.e2e.conftest import Service
from tests.e2e.helpers import compose_like_env, embedded_env

pytestmark = pytest.mark.e2e

CORPUS_DOCS = ("test__docx__tables.docx", "test__docx__lists.docx")


def page_text(reader: PdfReader, index: int) -> str:
    return " ".join((reader.pages[index].extract_text() or "").split())


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3-redis"])
def test_a_merged_job_is_one_pdf_of_its_files_in_order_with_bookmarks_and_a_failure_page(
    stack: str,
    request: pytest.FixtureRequest,
    make_service: Callable[[dict[str, str]], Service],
    corpus: Callable[[str], Path],
) -> None:
    env = embedded_env() if stack == "embedded" else compose_like_env(request)
    service = make_service(env)
    service.start()
    # The parts' order, not the names' order, is the merged PDF's order.
    parts = [
        ("zulu.docx", make_docx("Zulu one", "Zulu two", "Zulu three")),
        *((name, corpus(name).read_bytes()) for name in CORPUS_DOCS),
        ("damaged.docx", bad_documents()["truncated.docx"]),
        ("alpha.docx", make_docx("Alpha")),
    ]
    with httpx.Client(base_url=service.url, timeout=60) as api:
        created = api.post(
            "/api/v1/jobs",
            files=[("files", (name, data, "application/octet-stream")) for name, data in parts],
            data={"merge": "true"},
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        status: dict[str, Any] = dict(service.wait_for_job(job_id))
        assert status["status"] == "COMPLETED", status
        assert status["merged_url"] == f"{service.url}/api/v1/jobs/{job_id}/merged"
        check_merged(api, status, parts)

        # A job without merge has none: 409, in the one error shape.
        plain = api.post(
            "/api/v1/jobs",
            files=[("files", ("one.docx", make_docx("one"), "application/octet-stream"))],
        )
        plain_id = plain.json()["job_id"]
        assert service.wait_for_job(plain_id)["merged_url"] is None
        refused = api.get(f"/api/v1/jobs/{plain_id}/merged")
        assert refused.status_code == 409
        assert "without merge=true" in refused.json()["error"]["message"]

        # Deleting the job removes it: the API no longer knows it, the store no longer has it.
        location = api.get(f"/api/v1/jobs/{job_id}/merged").headers["location"]
        assert api.delete(f"/api/v1/jobs/{job_id}").status_code == 204
        assert api.get(f"/api/v1/jobs/{job_id}/merged").status_code == 404
        assert httpx.get(location, timeout=60).status_code in (403, 404)
    assert service.stop() == 0


def check_merged(api: httpx.Client, status: dict[str, Any], parts: list[tuple[str, bytes]]) -> None:
    files = {file["filename"]: file for file in status["files"]}
    converted = [name for name, _ in parts if files[name]["status"] == "COMPLETED"]
    assert converted == [name for name, _ in parts if name != "damaged.docx"]
    counts = []
    for name in converted:
        own = httpx.get(files[name]["download_url"], timeout=60)
        assert own.status_code == 200
        counts.append(len(PdfReader(io.BytesIO(own.content)).pages))
    assert counts[0] == 3

    redirect = api.get(status["merged_url"])
    assert redirect.status_code == 307
    fetched = httpx.get(redirect.headers["location"], timeout=60)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/pdf"
    assert len(fetched.content) == status["merged_bytes"]
    streamed = api.get(status["merged_url"], params={"redirect": "false"})
    assert streamed.status_code == 200 and streamed.content == fetched.content

    merged = PdfReader(io.BytesIO(fetched.content), strict=True)
    assert len(merged.pages) == sum(counts) + 1  # and one page for the damaged file
    starts = [sum(counts[:index]) for index in range(len(counts))]
    outline = []
    for item in merged.outline:
        assert not isinstance(item, list)  # one level of bookmarks
        outline.append((str(item.title), merged.get_destination_page_number(item)))
    assert outline == [
        *zip(converted, starts, strict=True),
        ("Files not converted", sum(counts)),
    ]
    assert [page_text(merged, n) for n in range(3)] == ["Zulu one", "Zulu two", "Zulu three"]
    assert "Alpha" in page_text(merged, starts[-1])
    failure = page_text(merged, sum(counts))
    message = files["damaged.docx"]["error_message"]
    assert "damaged.docx" in failure and " ".join(message.split()) in failure
