"""Hostile inputs through the real service, as an attacker with an API key would send them.

One service, started as ``make run`` starts it (sandbox on, default limits), takes every kind of
hostile input the security work knows: documents that try to read the server's files (every
carrier crossed with every evasion, tests/hostile_docs.py), zips and multipart bodies that try
to exhaust the API (tests/hostile_inputs.py), callback URLs aimed at the deployment itself
(tests/hostile_inputs_webhooks.py), a DOCX whose parts expand to gigabytes, and .odt, .rtf
and .doc documents that reach for files or are encrypted, damaged, bombs or absurdly nested
(the rows of docs/reliability.md's hostile-input table for those kinds). Each kind is a
row of the "hostile input" table pytest prints at the end: how many were tried, how many PDFs
held a secret, how many answers were 5xx, and the API process's peak RSS while it was sent.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zipfile import ZIP_STORED

import httpx
import pytest

from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import HOSTILE_LEDGER, TERMINAL, HostileRecord, Service
from tests.hostile_docs import (
    VISIBLE,
    hostile_documents,
    hostile_odts,
    hostile_rtfs,
    leaks,
    odt,
    odt_manifest,
    pdf_text,
    write_secrets,
)
from tests.hostile_inputs import HOSTILE_REQUESTS, docx_with_bombs, package_with_bombs
from tests.hostile_inputs_webhooks import ssrf_callback_urls
from tests.saved_documents import LEGACY_FILTERS, soffice_saved
from tests.services import cmdline, descendants

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]

GiB = 1024 * 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("hostile")
    running = Service(data_dir=folder / "data", env={}, log_path=folder / "service.log")
    running.start()
    yield running
    running.stop()


def api_pid(service: Service) -> int:
    assert service.process is not None
    pids = [pid for pid in descendants(service.process.pid) if "uvicorn" in cmdline(pid)]
    assert len(pids) == 1, f"expected one API process, found {pids}"
    return pids[0]


@contextmanager
def recorded(kind: str, service: Service) -> Iterator[HostileRecord]:
    """A ledger row for ``kind``; the API's peak RSS is reset before and read after, so the
    row shows what this kind of input cost the API, not what came before it."""
    record = HostileRecord(kind)
    pid = api_pid(service)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
    try:
        yield record
    finally:
        status = Path(f"/proc/{pid}/status").read_text()
        peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        record.api_peak_rss_mb = peak_kb / 1024
        HOSTILE_LEDGER.append(record)


def counted(record: HostileRecord, response: httpx.Response) -> httpx.Response:
    if response.status_code >= 500:
        record.server_errors += 1
    return response


def wait_for(service: Service, record: HostileRecord, job_id: str) -> dict[str, Any]:
    status = service.wait_for_job(job_id, timeout=900)
    assert status["status"] in TERMINAL
    return status


def archive_of(status: dict[str, Any], record: HostileRecord) -> zipfile.ZipFile:
    response = counted(
        record, httpx.get(str(status["download_url"]), follow_redirects=True, timeout=120)
    )
    assert response.status_code == 200
    return zipfile.ZipFile(io.BytesIO(response.content))


def test_documents_that_reach_for_local_files_leak_nothing(
    service: Service, tmp_path: Path
) -> None:
    # The secrets lie outside any job, where the worker's own user can read them: only the
    # sandbox and the sanitizer stand between a document and them.
    secrets = write_secrets(tmp_path / "secrets")
    documents = {
        f"{index:03}-{re.sub(r'[^A-Za-z0-9]+', '-', hostile.name)}.docx": hostile.data
        for index, hostile in enumerate(hostile_documents(secrets))
    }
    with recorded("documents reaching for local files", service) as record:
        response = counted(
            record,
            httpx.post(
                f"{service.url}/api/v1/jobs",
                files={"file": ("hostile.zip", make_zip(documents), "application/zip")},
                timeout=120,
            ),
        )
        assert response.status_code == 202, response.text
        record.tried = len(documents)
        status = wait_for(service, record, response.json()["job_id"])
    files = {f["filename"]: f for f in status["files"]}
    leaked: dict[str, list[str]] = {}
    with archive_of(status, record) as archive:
        for name in documents:
            entry = files[name]
            assert entry["status"] == "COMPLETED", (name, entry["error_message"])
            found = leaks(archive.read(entry["output_name"]))
            if found:
                leaked[name] = found
    record.leaked = len(leaked)
    assert leaked == {}
    assert record.server_errors == 0


@pytest.mark.parametrize("kind", sorted(HOSTILE_REQUESTS))
def test_uploads_built_to_exhaust_the_api_are_refused(service: Service, kind: str) -> None:
    request = HOSTILE_REQUESTS[kind]()
    with recorded(f"upload: {kind}", service) as record:
        record.tried = 1
        response = counted(
            record,
            httpx.request(
                request.method,
                f"{service.url}{request.path}",
                content=request.body.body,
                headers=request.body.headers,
                timeout=120,
            ),
        )
    assert response.status_code == request.expected_status, response.text
    assert response.json()["error"]["message"], "the refusal says why"
    # The service still answers the next client at once.
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200


def test_callback_urls_aimed_at_the_deployment_are_refused(service: Service) -> None:
    urls = ssrf_callback_urls()
    zipped = make_zip({"a.docx": make_docx("callback")})
    answers: dict[str, int] = {}
    with recorded("callback URLs aimed inside the deployment", service) as record:
        record.tried = len(urls)
        for url in urls:
            response = counted(
                record,
                httpx.post(
                    f"{service.url}/api/v1/jobs",
                    files={"file": ("a.zip", zipped, "application/zip")},
                    data={"callback_url": url},
                    timeout=60,
                ),
            )
            answers[url] = response.status_code
    assert {url: code for url, code in answers.items() if code != 422} == {}


def test_a_document_that_expands_to_gigabytes_fails_alone(service: Service) -> None:
    documents = {
        "bomb.docx": docx_with_bombs(*[512 * 1024 * 1024] * 3),
        "fine.docx": make_docx("Beside a bomb"),
    }
    with recorded("DOCX whose parts expand to gigabytes", service) as record:
        response = counted(
            record,
            httpx.post(
                f"{service.url}/api/v1/jobs",
                # Stored: a deflated outer zip would give the bomb away at the ingest's ratio
                # check, and this row is about the package's own parts.
                files={"file": ("bomb.zip", make_zip(documents, ZIP_STORED), "application/zip")},
                timeout=120,
            ),
        )
        assert response.status_code == 202, response.text
        record.tried = 1
        status = wait_for(service, record, response.json()["job_id"])
    files = {f["filename"]: f for f in status["files"]}
    assert files["fine.docx"]["status"] == "COMPLETED"
    assert files["bomb.docx"]["status"] == "FAILED"
    assert "expands to more than" in files["bomb.docx"]["error_message"]
    assert record.server_errors == 0


def submitted_zip(
    service: Service, record: HostileRecord, documents: dict[str, bytes]
) -> dict[str, Any]:
    response = counted(
        record,
        httpx.post(
            f"{service.url}/api/v1/jobs",
            # Stored: a deflated outer zip would give a bomb away at the ingest's ratio check.
            files={"file": ("batch.zip", make_zip(documents, ZIP_STORED), "application/zip")},
            timeout=120,
        ),
    )
    assert response.status_code == 202, response.text
    record.tried = len(documents)
    return wait_for(service, record, response.json()["job_id"])


def test_odt_rtf_and_doc_documents_that_reach_for_local_files_leak_nothing(
    service: Service, tmp_path: Path
) -> None:
    """The rows of docs/reliability.md's hostile-input table for .odt, .rtf and .doc: ODT links
    (file:, climbing out, an inline SVG, DDE), RTF fields (INCLUDETEXT, INCLUDEPICTURE, DDE,
    hidden by \\bin bytes; 100,000 nested groups), and a .doc saved by LibreOffice itself with
    its INCLUDEPICTURE field intact (left to the sandbox: a .doc is not rewritten)."""
    secrets = write_secrets(tmp_path / "secrets")
    odts = hostile_odts(secrets)
    documents = {f"odt-{name}.odt": data for name, data in odts.items()}
    documents |= {f"rtf-{name}.rtf": data for name, data in hostile_rtfs(secrets).items()}
    linked = tmp_path / "made" / "linked-picture.odt"
    linked.parent.mkdir()
    linked.write_bytes(odts["linked-picture"])
    [saved] = soffice_saved([linked], LEGACY_FILTERS["doc"], linked.parent)
    doc = saved.read_bytes()
    field = f'INCLUDEPICTURE  "file://{secrets.picture}"'
    assert field.encode("utf-16-le") in doc  # the field is there, in Word's UTF-16 text
    documents["doc-includepicture.doc"] = doc
    with recorded(".odt, .rtf and .doc reaching for local files", service) as record:
        status = submitted_zip(service, record, documents)
    files = {f["filename"]: f for f in status["files"]}
    leaked: dict[str, list[str]] = {}
    with archive_of(status, record) as archive:
        for name in documents:
            entry = files[name]
            assert entry["status"] == "COMPLETED", (name, entry["error_message"])
            pdf = archive.read(entry["output_name"])
            assert VISIBLE in pdf_text(pdf), name
            found = leaks(pdf)
            if found:
                leaked[name] = found
    record.leaked = len(leaked)
    assert leaked == {}
    assert record.server_errors == 0


def test_odt_rtf_and_doc_documents_refused_each_with_its_reason(
    service: Service, legacy_documents: dict[str, Path]
) -> None:
    """Encrypted, damaged, compressed-bomb and absurdly nested documents each fail alone, with
    a message a person understands; the document beside them converts."""
    doc = legacy_documents["doc"].read_bytes()
    levels = 50_000
    expected = {
        "encrypted.doc": (legacy_documents["encrypted-doc"].read_bytes(), "password-protected"),
        "damaged.doc": (doc[: len(doc) // 2], "damaged or truncated Word 97-2003 document"),
        "encrypted.odt": (
            odt(
                "",
                content=b"\x8a\x07 encrypted bytes",
                manifest=odt_manifest(extra="<manifest:encryption-data/>").encode("utf-8"),
            ),
            "password-protected",
        ),
        "bomb.odt": (
            package_with_bombs(odt("<text:p>a bomb rides along</text:p>"), "Pictures/", GiB // 2),
            "expands to more than QUIRE_MAX_PART_EXPANDED_BYTES",
        ),
        "nested.odt": (
            odt("<text:span>" * levels + "<text:p/>" + "</text:span>" * levels),
            "levels deep",
        ),
        "damaged.rtf": (b"{\\rtf1 {\\pict text}", "damaged or truncated RTF document"),
    }
    documents = {name: data for name, (data, _) in expected.items()}
    documents["fine.odt"] = legacy_documents["odt"].read_bytes()
    with recorded(".odt/.rtf/.doc: encrypted, damaged, bomb, nesting", service) as record:
        status = submitted_zip(service, record, documents)
        record.tried = len(expected)  # the hostile ones, not the one beside them
    files = {f["filename"]: f for f in status["files"]}
    assert files["fine.odt"]["status"] == "COMPLETED", files["fine.odt"]["error_message"]
    messages = {name: files[name]["error_message"] or "" for name in expected}
    assert {name: files[name]["status"] for name in expected} == dict.fromkeys(expected, "FAILED")
    assert {
        name: message for name, message in messages.items() if expected[name][1] not in message
    } == {}
    assert record.server_errors == 0
