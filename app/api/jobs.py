"""``/api/v1/jobs``: submit a zip, watch its files, download the result."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urljoin

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import queue
from app.api.deps import BaseUrlDep, SessionDep, SettingsDep, StoreDep, caller
from app.api.errors import ApiError, responses
from app.db import session_scope
from app.jobs import JobView, create_job, get_job_view, new_job_id, parse_job_id
from app.models import FileStatus, JobStatus
from app.schemas import FileResult, JobCreated, JobStatusResponse, Progress
from app.storage import LocalStore, ObjectStore, job_prefixes, result_key, upload_key
from app.uploads import receive_zip
from app.zipinput import DocxEntry, list_docx_entries

log = logging.getLogger("quire.api")
router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(caller)])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A zip archive of .docx files (folders allowed).",
                        }
                    },
                }
            }
        },
    }
}


def _list_entries(store: ObjectStore, key: str, max_files: int) -> list[DocxEntry]:
    with store.open_reader(key) as source:
        return list_docx_entries(source, max_files)


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    openapi_extra=UPLOAD_BODY,
    responses=responses(400, 413, 415, 422, 503, 507),
    summary="Submit a zip of DOCX files for conversion",
)
async def submit_job(
    request: Request, settings: SettingsDep, store: StoreDep, base: BaseUrlDep
) -> JSONResponse:
    """Stream the zip into the object store, list its DOCX entries and queue the job.

    Answers at once with 202; conversion happens in the background.
    """
    if isinstance(store, LocalStore) and store.free_bytes() < settings.min_free_bytes:
        raise ApiError(
            507, "The server is low on disk space and accepts no uploads now; try again later."
        )
    job_id = new_job_id()
    key = upload_key(job_id)
    upload_bytes = await receive_zip(request, store, key, settings.max_upload_bytes)

    def _create() -> int:
        entries = _list_entries(store, key, settings.max_files_per_job)
        with session_scope() as session:
            create_job(session, job_id, entries, upload_bytes)
        return len(entries)

    try:
        file_count = await run_in_threadpool(_create)
    except BaseException:
        # Refused, or the database or store failed: no job exists, so nothing may stay stored.
        await run_in_threadpool(store.delete_prefix, job_prefixes(job_id)[0])
        raise
    log.info("job.accepted job_id=%s files=%d bytes=%d", job_id, file_count, upload_bytes)
    try:
        await run_in_threadpool(queue.send_ingest, job_id)
    except Exception:
        # The job is safely committed; the sweeper re-sends the ingest once the broker is back.
        log.exception("job.enqueue_failed job_id=%s", job_id)
    status_url = f"{base}/api/v1/jobs/{job_id}"
    body = JobCreated(
        job_id=job_id, status=JobStatus.PENDING, file_count=file_count, status_url=status_url
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": status_url}
    )


def _load(session: SessionDep, raw_id: str) -> JobView:
    job_id = parse_job_id(raw_id)
    view = get_job_view(session, job_id) if job_id else None
    if view is None:
        raise ApiError(
            404,
            f"No job with id {raw_id!r} exists (finished jobs are removed after QUIRE_JOB_TTL).",
        )
    return view


def _status_document(view: JobView, base: str) -> JobStatusResponse:
    job, counts = view.job, view.counts
    total = len(view.files)
    finished = counts[FileStatus.COMPLETED] + counts[FileStatus.FAILED]
    return JobStatusResponse(
        job_id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        error_message=job.error_message,
        download_url=(
            f"{base}/api/v1/jobs/{job.id}/download" if job.status == JobStatus.COMPLETED else None
        ),
        result_bytes=job.result_bytes,
        progress=Progress(
            total=total,
            pending=counts[FileStatus.PENDING],
            in_progress=counts[FileStatus.IN_PROGRESS],
            completed=counts[FileStatus.COMPLETED],
            failed=counts[FileStatus.FAILED],
            percent=round(100 * finished / total, 1) if total else 100.0,
        ),
        # The rows come from the database as they were written: no need to validate them again
        # (the largest cost of answering a 10,000-file job).
        files=[
            FileResult.model_construct(
                file_id=file.id,
                filename=file.filename,
                output_name=file.output_name,
                status=file.status,
                error_message=file.error_message,
            )
            for file in view.files
        ],
    )


@router.get(
    "/{job_id}",
    response_model=JobStatusResponse,
    responses=responses(404),
    summary="A job's status, progress and per-file results",
)
def get_job(job_id: str, session: SessionDep, base: BaseUrlDep) -> JobStatusResponse:
    return _status_document(_load(session, job_id), base)


@router.get(
    "/{job_id}/download",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    responses={
        **responses(404, 409),
        200: {"content": {"application/zip": {}}, "description": "The zip (redirect=false)"},
        307: {"description": "Redirect to a presigned, expiring URL of the result zip"},
    },
    summary="Download the zip of PDFs",
)
def download_job(
    job_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: Annotated[
        bool, Query(description="false streams the zip through the API instead")
    ] = True,
) -> RedirectResponse | StreamingResponse:
    job = _load(session, job_id).job
    if job.status == JobStatus.FAILED:
        raise ApiError(409, f"Job {job.id} failed and has no archive: {job.error_message}")
    if job.status != JobStatus.COMPLETED:
        raise ApiError(409, f"Job {job.id} is {job.status.value}; its archive is not ready yet.")
    key = result_key(job.id)
    if not store.exists(key):
        raise ApiError(404, f"The archive of job {job.id} no longer exists.")
    filename = f"quire-{job.id}.zip"
    if redirect:
        url = store.presigned_get_url(
            key,
            filename=filename,
            content_type="application/zip",
            expires_in=settings.presigned_url_ttl,
        )
        return RedirectResponse(urljoin(base + "/", url), status_code=307)
    return StreamingResponse(
        store.iter_chunks(key),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(store.size(key)),
        },
    )
