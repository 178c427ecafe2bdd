"""``/api/v1/jobs``: submit DOCX files, list and watch jobs, download the results."""

from __future__ import annotations

import hashlib
import posixpath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import BaseUrlDep, OwnerDep, SessionDep, SettingsDep, StoreDep, caller
from app.api.errors import ApiError, responses
from app.config import Settings
from app.jobs import Cursor, list_jobs, new_job_id
from app.models import JobStatus
from app.openapi import BINARY, URI, component_ref
from app.schemas import JobCreated, JobList, JobStatusResponse, JobSubmission
from app.services import jobs as job_service
from app.services.errors import ServiceError
from app.services.submission import Submission, check_before_upload, invalid_request, submit
from app.status import absolute, file_download_url, job_summary, status_document, status_url
from app.storage import ObjectStore, output_key, upload_key
from app.upload_stream import drain, receive_upload

# Tags per route: the downloads are a group of their own in the document, as in docs/api.md.
router = APIRouter(prefix="/api/v1/jobs", dependencies=[Depends(caller)])

MAX_JSON_BODY = 64 * 1024
# The route reads its body itself (streamed multipart, or size-checked JSON), so FastAPI sees no
# model for it: the schemas are components that app/openapi.py adds to the document.
SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": component_ref("SubmitJobForm"),
                "encoding": {"files": {"contentType": "application/octet-stream"}},
            },
            "application/json": {
                "schema": component_ref("JobSubmission"),
                "example": {"upload_id": "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a", "pdf_a": "2b"},
            },
        },
    }
}
STATUS_LOCATION = {"Location": {"description": "The job's status URL", "schema": URI}}
ACCEPTED = {
    "description": "The job is created; conversion happens in the background",
    "headers": {
        **STATUS_LOCATION,
        "Idempotent-Replayed": {
            "description": "true when an earlier request with this Idempotency-Key made the job",
            "schema": {"type": "string", "enum": ["true"]},
        },
    },
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="The same key with the same body answers with the same job, once created.",
    ),
]


def _accepted(job_id: str, file_count: int, base: str, *, replayed: bool = False) -> JSONResponse:
    location = status_url(base, job_id)
    body = JobCreated(
        job_id=job_id, status=JobStatus.PENDING, file_count=file_count, status_url=location
    )
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


async def _read_submission(request: Request) -> JobSubmission:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise ApiError(413, f"A JSON submission is at most {MAX_JSON_BODY} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise ApiError(413, f"A JSON submission is at most {MAX_JSON_BODY} bytes.")
    try:
        return JobSubmission.model_validate_json(bytes(body))
    except ValidationError as error:
        raise invalid_request(error) from None


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    openapi_extra=SUBMIT_BODY,
    operation_id="submitJob",
    tags=["jobs"],
    responses={202: ACCEPTED, **responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503, 507)},
    summary="Submit DOCX files for conversion",
)
async def submit_job(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    base: BaseUrlDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create a job from a zip of DOCX files (`file`), several DOCX files (`files`, repeated),
    or a direct upload (JSON `{"upload_id": ...}`, see `POST /api/v1/uploads`).

    The multipart body is streamed into the object store as it arrives. Answers at once with
    202; conversion happens in the background. With an `Idempotency-Key`, sending the same
    request again answers with the job the first one created (header `Idempotent-Replayed`).
    Past the caller's quotas (active jobs, queued files) it answers 429 with `Retry-After`.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        body = await _read_submission(request)
        submission = Submission(
            job_id=body.upload_id,
            owner=owner,
            options=body,
            digest=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
            idempotency_key=idempotency_key,
        )
    else:
        try:
            await run_in_threadpool(check_before_upload, owner, idempotency_key, store, settings)
        except ServiceError:
            # Refused before the body: it is read and dropped, never stored, so the client
            # reads the answer instead of a reset connection.
            await drain(request.stream())
            raise
        job_id = new_job_id()
        received = await receive_upload(
            request,
            store,
            upload_key(job_id),
            settings.max_upload_bytes,
            settings.max_files_per_job,
            digest=idempotency_key is not None,
        )
        submission = Submission(
            job_id=job_id,
            owner=owner,
            options=received.options,
            digest=received.digest or "",
            idempotency_key=idempotency_key,
            upload_bytes=received.bytes_stored,
        )
    accepted = await run_in_threadpool(submit, submission, store, settings)
    return _accepted(accepted.job_id, accepted.file_count, base, replayed=accepted.replayed)


@router.get(
    "",
    response_model=JobList,
    operation_id="listJobs",
    tags=["jobs"],
    responses=responses(400, 401, 403),
    summary="List your jobs, newest first",
)
def list_all_jobs(
    session: SessionDep,
    owner: OwnerDep,
    base: BaseUrlDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> JobList:
    after = None
    if cursor is not None:
        after = Cursor.decode(cursor)
        if after is None:
            raise ApiError(400, "The cursor is not one this server issued; start without it.")
    jobs, next_cursor = list_jobs(session, owner, status=status, limit=limit, after=after)
    return JobList(
        jobs=[job_summary(job, base) for job in jobs],
        next_cursor=next_cursor.encode() if next_cursor is not None else None,
    )


@router.get(
    "/{job_id}",
    response_model=JobStatusResponse,
    operation_id="getJob",
    tags=["jobs"],
    responses=responses(401, 403, 404),
    summary="A job's status, progress and per-file results",
)
def get_job(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
) -> JobStatusResponse:
    view = job_service.job_view(session, job_id, owner)
    return status_document(view, base, store, settings.presigned_url_ttl)


def _attachment(filename: str) -> str:
    """Content-Disposition for a name from the upload (RFC 6266): headers are Latin-1, so a
    Greek or CJK name raw would be a 500, and a quote or a newline would break the header. An
    ASCII stand-in for old clients, the exact name UTF-8 encoded for the rest."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _stream(store: ObjectStore, key: str, *, filename: str, content_type: str) -> StreamingResponse:
    """The object through the API, for clients that cannot reach the store."""
    return StreamingResponse(
        store.iter_chunks(key),
        media_type=content_type,
        headers={
            "Content-Disposition": _attachment(filename),
            "Content-Length": str(store.size(key)),
        },
    )


def _download(
    store: ObjectStore,
    settings: Settings,
    base: str,
    key: str,
    *,
    filename: str,
    content_type: str,
    redirect: bool,
) -> RedirectResponse | StreamingResponse:
    """A stored result: a redirect to a presigned URL, or (``redirect`` false) streamed."""
    if not redirect:
        return _stream(store, key, filename=filename, content_type=content_type)
    url = store.presigned_get_url(
        key, filename=filename, content_type=content_type, expires_in=settings.presigned_url_ttl
    )
    return RedirectResponse(absolute(base, url), status_code=307)


def _download_responses(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {
        **responses(401, 403, 404, 409),
        200: {
            "content": {media_type: {"schema": BINARY}},
            "description": f"{what}, streamed (redirect=false)",
        },
        307: {
            "description": f"Redirect to a presigned, expiring URL of {what}",
            "headers": {"Location": {"description": "The presigned URL", "schema": URI}},
        },
    }


RedirectQuery = Annotated[
    bool, Query(description="false streams the bytes through the API instead")
]


@router.get(
    "/{job_id}/files/{file_id}",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    operation_id="downloadFile",
    tags=["downloads"],
    responses=_download_responses("application/pdf", "the file's PDF"),
    summary="Download one file's PDF",
)
def download_file(
    job_id: str,
    file_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: RedirectQuery = True,
) -> RedirectResponse | StreamingResponse:
    file = job_service.completed_file(session, job_id, file_id, owner)
    if redirect:
        url = file_download_url(
            store, base, file.job_id, file.id, file.output_name, settings.presigned_url_ttl
        )
        return RedirectResponse(url, status_code=307)
    return _stream(
        store,
        output_key(file.job_id, file.id),
        filename=posixpath.basename(file.output_name),
        content_type="application/pdf",
    )


@router.get(
    "/{job_id}/download",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    operation_id="downloadJob",
    tags=["downloads"],
    responses=_download_responses("application/zip", "the result zip"),
    summary="Download the zip of PDFs",
)
def download_job(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: RedirectQuery = True,
) -> RedirectResponse | StreamingResponse:
    archive = job_service.completed_archive(session, store, job_id, owner)
    return _download(
        store,
        settings,
        base,
        archive.key,
        filename=archive.filename,
        content_type="application/zip",
        redirect=redirect,
    )


@router.get(
    "/{job_id}/merged",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    operation_id="downloadMerged",
    tags=["downloads"],
    responses=_download_responses("application/pdf", "the merged PDF"),
    summary="Download the job's merged PDF",
)
def download_merged(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: RedirectQuery = True,
) -> RedirectResponse | StreamingResponse:
    """One PDF of the whole job (submitted with `merge=true`): the converted files in upload
    order, one bookmark per file named by its path, and (unless `merge_failure_page=false`)
    pages at the end listing the files that failed. 409 while the job runs, and for a job
    without `merge`."""
    merged = job_service.merged_pdf(session, store, job_id, owner)
    return _download(
        store,
        settings,
        base,
        merged.key,
        filename=merged.filename,
        content_type="application/pdf",
        redirect=redirect,
    )
