"""``FakeQuire``: a Quire server in memory, for testing code that uses the client.

The client's one swappable part is its transport; this is a fake to put there::

    fake = FakeQuire()
    with Client("http://quire.test", transport=fake.transport()) as quire:
        job = quire.submit("letters/")
        quire.wait(job.job_id)

It answers the API's routes with the API's documents and error bodies, keeps everything in
memory and converts nothing: a ``.docx`` that is a zip package "converts" to a small PDF-looking
file, anything else FAILS as the server would say. Jobs end as soon as they are submitted,
unless ``FakeQuire(hold=True)``: then they stay IN_PROGRESS until ``finish(job_id)``.
``refuse_next(status, message)`` makes the next API request answer with that error, as a
server having trouble would. ``FakeQuire(max_active_jobs=N)`` refuses a submission while N jobs
are unfinished, with 429 ``quota_exceeded`` and ``Retry-After: retry_after``, as a server
with ``QUIRE_MAX_ACTIVE_JOBS_PER_KEY`` does (held jobs stay unfinished until ``finish``).

It is a stand-in for tests, not a specification: the real API is the reference (docs/).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from typing import Any

import httpx

from quire_client.sources import DOCUMENT_SUFFIXES

NOT_A_DOCX = "The file is not a DOCX document: it is not a zip package."
STORE = "/fake-store/"  # where the direct upload's PUT goes; no API key is needed there


@dataclass
class _File:
    file_id: str
    filename: str
    data: bytes
    status: str = "PENDING"
    error_message: str | None = None

    @property
    def output_name(self) -> str:
        stem, dot, suffix = self.filename.rpartition(".")
        return (
            stem if dot and f".{suffix.lower()}" in DOCUMENT_SUFFIXES else self.filename
        ) + ".pdf"

    def convert(self) -> None:
        if zipfile.is_zipfile(io.BytesIO(self.data)):
            self.status, self.error_message = "COMPLETED", None
        else:
            self.status, self.error_message = "FAILED", NOT_A_DOCX

    def pdf(self) -> bytes:
        return b"%PDF-1.7\n% FakeQuire's stand-in for " + self.filename.encode() + b"\n%%EOF\n"


@dataclass
class _Job:
    job_id: str
    files: list[_File]
    options: dict[str, Any]
    status: str = "PENDING"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def counts(self) -> dict[str, Any]:
        counts = {
            state.lower(): 0
            for state in ("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED")
        }
        for file in self.files:
            counts[file.status.lower()] += 1
        finished = counts["completed"] + counts["failed"] + counts["cancelled"]
        total = len(self.files)
        percent = round(100 * finished / total, 1) if total else 100.0
        return {"total": total, **counts, "percent": percent}


def _error(
    status: int, message: str, code: str | None = None, retry_after: float | None = None
) -> httpx.Response:
    code = code or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    body = {"error": {"status": status, "code": code, "message": message}}
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return httpx.Response(status, json=body, headers=headers)


class FakeQuire:
    """The Quire API in memory. ``api_keys``: the keys it accepts (none: it asks for none).
    ``direct_uploads=False`` answers ``POST /api/v1/uploads`` with 404, as an older server.
    ``max_active_jobs``: the quota of unfinished jobs (all keys together), past which a
    submission is 429 with ``Retry-After: retry_after`` (None: without the header)."""

    base = "http://quire.test"

    def __init__(
        self,
        *,
        api_keys: tuple[str, ...] = (),
        direct_uploads: bool = True,
        hold: bool = False,
        max_active_jobs: int | None = None,
        retry_after: float | None = 5.0,
    ) -> None:
        self.api_keys = api_keys
        self.direct_uploads = direct_uploads
        self.hold = hold
        self.max_active_jobs = max_active_jobs
        self.retry_after = retry_after
        self.jobs: dict[str, _Job] = {}
        self.uploads: dict[str, bytes | None] = {}
        self.requests: list[httpx.Request] = []
        self._refusals: list[tuple[int, str, float | None]] = []

    def transport(self) -> httpx.MockTransport:
        """The transport to give ``Client(..., transport=...)``."""
        return httpx.MockTransport(self)

    def refuse_next(
        self,
        status: int,
        message: str = "Refused by FakeQuire.",
        *,
        retry_after: float | None = None,
    ) -> None:
        """The next API request (after any already waiting) answers ``status`` with this
        message in the API's error body, and a ``Retry-After`` header if given."""
        self._refusals.append((status, message, retry_after))

    def finish(self, job_id: str) -> None:
        """End a held job: each of its files not cancelled converts (or fails)."""
        job = self.jobs[job_id]
        for file in job.files:
            if file.status in ("PENDING", "IN_PROGRESS"):
                file.convert()
        job.status = "COMPLETED"

    # -- the routes --------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.startswith(STORE):
            return self._store(request, path[len(STORE) :])
        if self._refusals:
            status, message, retry_after = self._refusals.pop(0)
            return _error(status, message, retry_after=retry_after)
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "v1"] or len(parts) < 3:
            return _error(404, "Not Found")
        route, rest = parts[2], parts[3:]
        if route == "uploads" and not rest and request.method == "POST":
            return self._offer()
        if route != "jobs":
            return _error(404, "Not Found")
        if not rest:
            return self._submit(request) if request.method == "POST" else self._list(request)
        job = self.jobs.get(rest[0])
        if job is None:
            return _error(404, f"No job with id {rest[0]!r}.")
        action = (request.method, rest[1] if len(rest) > 1 else "")
        if action == ("GET", ""):
            return httpx.Response(200, json=self._document(job))
        if action == ("DELETE", ""):
            del self.jobs[job.job_id]
            return httpx.Response(204)
        if action == ("GET", "events"):
            return self._events(job)
        if action == ("GET", "download"):
            return self._archive(job)
        if action == ("GET", "files") and len(rest) == 3:
            return self._pdf(job, rest[2])
        if action == ("POST", "retry"):
            return self._retry(job)
        if action == ("POST", "cancel"):
            return self._cancel(job)
        return _error(405, "Method Not Allowed")

    def _refuse_key(self, request: httpx.Request) -> httpx.Response | None:
        if not self.api_keys:
            return None
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer "):
            return _error(
                401,
                "This server needs an API key: send the header 'Authorization: Bearer <key>'.",
            )
        if given.removeprefix("Bearer ") not in self.api_keys:
            return _error(403, "The API key is not valid.")
        return None

    def _offer(self) -> httpx.Response:
        if not self.direct_uploads:
            return _error(404, "Not Found")
        upload_id = str(uuid.uuid4())
        self.uploads[upload_id] = None
        offer = {
            "upload_id": upload_id,
            "method": "PUT",
            "url": f"{self.base}{STORE}{upload_id}",
            "headers": {"Content-Type": "application/zip"},
            "expires_at": datetime.now(UTC).isoformat(),
            "max_bytes": 2**31,
        }
        return httpx.Response(201, json=offer)

    def _store(self, request: httpx.Request, upload_id: str) -> httpx.Response:
        if request.method != "PUT" or upload_id not in self.uploads:
            return httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
        if "authorization" in request.headers:  # as S3: one signature, not two
            return httpx.Response(400, text="<Error><Code>InvalidArgument</Code></Error>")
        self.uploads[upload_id] = request.read()
        return httpx.Response(200)

    def _quota_refusal(self) -> httpx.Response | None:
        if self.max_active_jobs is None:
            return None
        active = sum(job.status in ("PENDING", "IN_PROGRESS") for job in self.jobs.values())
        if active < self.max_active_jobs:
            return None
        when = f"; try again in about {self.retry_after:g} s" if self.retry_after else ""
        message = (
            f"Quota reached: {active} active job{'s' if active != 1 else ''} of "
            f"{self.max_active_jobs} allowed per API key. A new job is accepted once one of "
            f"them ends{when}."
        )
        return _error(429, message, "quota_exceeded", self.retry_after)

    def _submit(self, request: httpx.Request) -> httpx.Response:
        refused = self._quota_refusal()
        if refused is not None:
            return refused  # a direct upload stays, to be submitted again
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = json.loads(request.read())
            upload = self.uploads.pop(str(body.get("upload_id")), None)
            if upload is None:
                return _error(404, "No upload with that id (or nothing was PUT to it).")
            options = {k: body.get(k) for k in ("pdf_a", "tagged_pdf", "callback_url")}
        else:
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + request.read()
            )
            fields: dict[str, bytes] = {}
            for part in message.iter_parts():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    fields[str(part.get_param("name", header="content-disposition"))] = payload
            if "file" not in fields:
                return _error(400, "Send the zip as the multipart field 'file'.")
            upload = fields["file"]
            options = {
                "pdf_a": fields.get("pdf_a", b"").decode() or None,
                "tagged_pdf": fields.get("tagged_pdf") == b"true",
                "callback_url": fields.get("callback_url", b"").decode() or None,
            }
        try:
            with zipfile.ZipFile(io.BytesIO(upload)) as archive:
                files = [
                    _File(str(uuid.uuid4()), info.filename, archive.read(info))
                    for info in archive.infolist()
                    if info.filename.lower().endswith(DOCUMENT_SUFFIXES)
                    and not info.filename.rsplit("/", 1)[-1].startswith("~$")
                ]
        except zipfile.BadZipFile:
            return _error(400, "The upload is not a zip file.")
        if not files:
            return _error(400, "The zip holds no .docx, .docm, .doc, .rtf or .odt file.")
        job = _Job(str(uuid.uuid4()), files, options)
        self.jobs[job.job_id] = job
        self._run(job)
        created = {
            "job_id": job.job_id,
            "status": "PENDING",
            "file_count": len(files),
            "status_url": f"{self.base}/api/v1/jobs/{job.job_id}",
        }
        return httpx.Response(202, json=created)

    def _run(self, job: _Job) -> None:
        job.status = "IN_PROGRESS"
        if not self.hold:
            self.finish(job.job_id)

    def _document(self, job: _Job) -> dict[str, Any]:
        done = job.status == "COMPLETED"
        files = [
            {
                "file_id": file.file_id,
                "filename": file.filename,
                "output_name": file.output_name,
                "status": file.status,
                "error_message": file.error_message,
                "download_url": (
                    f"{self.base}/api/v1/jobs/{job.job_id}/files/{file.file_id}"
                    if file.status == "COMPLETED"
                    else None
                ),
            }
            for file in job.files
        ]
        return {
            "job_id": job.job_id,
            "status": job.status,
            "created_at": job.created_at,
            "updated_at": job.created_at,
            "completed_at": job.created_at if done else None,
            "error_message": None,
            "download_url": f"{self.base}/api/v1/jobs/{job.job_id}/download" if done else None,
            "result_bytes": len(self._zip(job)) if done else None,
            "options": {
                "pdf_a": job.options.get("pdf_a"),
                "tagged_pdf": bool(job.options.get("tagged_pdf")),
            },
            "progress": job.counts(),
            "files": files,
        }

    def _list(self, request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("status")
        limit = int(request.url.params.get("limit", "50"))
        jobs = [job for job in reversed(self.jobs.values()) if wanted in (None, job.status)]
        summaries = [
            {
                "job_id": job.job_id,
                "status": job.status,
                "file_count": len(job.files),
                "finished_files": job.counts()["completed"] + job.counts()["failed"],
                "created_at": job.created_at,
                "updated_at": job.created_at,
                "options": {
                    "pdf_a": job.options.get("pdf_a"),
                    "tagged_pdf": bool(job.options.get("tagged_pdf")),
                },
                "status_url": f"{self.base}/api/v1/jobs/{job.job_id}",
            }
            for job in jobs[:limit]
        ]
        return httpx.Response(200, json={"jobs": summaries, "next_cursor": None})

    def _events(self, job: _Job) -> httpx.Response:
        # What is true now, then the end if the job has ended: a held job's stream stops
        # early, as a dropped one would, and the client polls.
        text = f"event: progress\ndata: {json.dumps(job.counts())}\n\n"
        if job.status in ("COMPLETED", "FAILED", "CANCELLED"):
            ended = {"job_id": job.job_id, "status": job.status, "progress": job.counts()}
            text += f"event: job\ndata: {json.dumps(ended)}\n\n"
        return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})

    def _zip(self, job: _Job) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in job.files:
                if file.status == "COMPLETED":
                    archive.writestr(file.output_name, file.pdf())
        return buffer.getvalue()

    def _archive(self, job: _Job) -> httpx.Response:
        if job.status != "COMPLETED":
            return _error(409, f"Job {job.job_id} is {job.status}; it has no archive.")
        return httpx.Response(200, content=self._zip(job))

    def _pdf(self, job: _Job, file_id: str) -> httpx.Response:
        file = next((file for file in job.files if file.file_id == file_id), None)
        if file is None:
            return _error(404, f"Job {job.job_id} has no file with id {file_id!r}.")
        if file.status != "COMPLETED":
            return _error(409, f"{file.filename} is {file.status}; it has no PDF.")
        return httpx.Response(200, content=file.pdf())

    def _retry(self, job: _Job) -> httpx.Response:
        again = [file for file in job.files if file.status in ("FAILED", "CANCELLED")]
        if job.status not in ("COMPLETED", "FAILED", "CANCELLED") or not again:
            return _error(409, f"Job {job.job_id} is {job.status}; there is nothing to retry.")
        for file in again:
            file.status, file.error_message = "PENDING", None
        self._run(job)
        retried = {
            "job_id": job.job_id,
            "status": "IN_PROGRESS",
            "retried_files": len(again),
            "status_url": f"{self.base}/api/v1/jobs/{job.job_id}",
        }
        return httpx.Response(202, json=retried)

    def _cancel(self, job: _Job) -> httpx.Response:
        if job.status not in ("PENDING", "IN_PROGRESS"):
            return _error(409, f"Job {job.job_id} has already ended ({job.status}).")
        cancelled = 0
        for file in job.files:
            if file.status in ("PENDING", "IN_PROGRESS"):
                file.status, file.error_message = "CANCELLED", "Cancelled before it was converted."
                cancelled += 1
        job.status = "CANCELLED"
        body = {
            "job_id": job.job_id,
            "status": "CANCELLED",
            "cancelled_files": cancelled,
            "status_url": f"{self.base}/api/v1/jobs/{job.job_id}",
        }
        return httpx.Response(200, json=body)


__all__ = ["NOT_A_DOCX", "FakeQuire"]
