"""A client's actions on a job: retry its failed files, cancel it, delete it.

Each is one transaction of conditional UPDATEs (``app.transitions``), committed before any task
is sent or any object removed, so workers always find the new state when they get there.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from sqlalchemy import select

from app import queue, transitions, webhooks
from app.api.deps import BaseUrlDep, OwnerDep, SettingsDep, StoreDep, caller, visible_job
from app.api.errors import ApiError, responses
from app.db import session_scope
from app.models import TERMINAL_JOB_STATUSES, Job, JobStatus, utcnow
from app.status import status_url
from app.storage import StoreError, job_prefixes, result_key

log = logging.getLogger("quire.api")
router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(caller)])

CANCELLED_FILE_MESSAGE = "Cancelled before it was converted."
EXAMPLE_ID = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
EXAMPLE_STATUS_URL = f"http://127.0.0.1:8000/api/v1/jobs/{EXAMPLE_ID}"
RETRY_EXAMPLE: JsonDict = {
    "job_id": EXAMPLE_ID,
    "status": "IN_PROGRESS",
    "retried_files": 2,
    "status_url": EXAMPLE_STATUS_URL,
}
CANCEL_EXAMPLE: JsonDict = {
    "job_id": EXAMPLE_ID,
    "status": "CANCELLED",
    "cancelled_files": 640,
    "status_url": EXAMPLE_STATUS_URL,
}


class RetryStarted(BaseModel):
    """A new round of a finished job: its failed (or cancelled) files are converted again."""

    job_id: str
    status: JobStatus = Field(description="IN_PROGRESS: the job runs again.")
    retried_files: int = Field(description="Files set back to PENDING to be converted again.")
    status_url: str

    model_config = ConfigDict(json_schema_extra={"examples": [RETRY_EXAMPLE]})


class JobCancelled(BaseModel):
    """The job ended CANCELLED; files already converted stay downloadable."""

    job_id: str
    status: JobStatus = Field(description="CANCELLED.")
    cancelled_files: int = Field(description="Files that were not converted and never will be.")
    status_url: str

    model_config = ConfigDict(json_schema_extra={"examples": [CANCEL_EXAMPLE]})


def _example(description: str, example: JsonDict) -> dict[str, object]:
    return {"description": description, "content": {"application/json": {"example": example}}}


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=RetryStarted,
    responses={
        202: _example("The failed files are queued again", RETRY_EXAMPLE),
        **responses(401, 403, 404, 409, 503),
    },
    summary="Convert a finished job's failed files again",
    description=(
        "Allowed once the job has ended: `FAILED`, `CANCELLED`, or `COMPLETED` with `FAILED` "
        "files (409 otherwise: still running, nothing failed, or ended more than QUIRE_JOB_TTL "
        "ago). Its `FAILED` and `CANCELLED` "
        "files go back to `PENDING` and are converted again; `COMPLETED` files keep their PDFs. "
        "The job is `IN_PROGRESS` again and, when the round ends, gets a new archive of every "
        "converted file (the previous one is removed now). A retry converts the same inputs: a "
        "document that is itself broken fails again with the same message."
    ),
)
def retry_job(
    job_id: str, owner: OwnerDep, store: StoreDep, base: BaseUrlDep, settings: SettingsDep
) -> JSONResponse:
    with session_scope() as session:
        job = visible_job(session, job_id, owner)
        before = job.status
        expired_before = utcnow() - timedelta(seconds=settings.job_ttl)
        plan = transitions.retry_job(session, job.id, expired_before)
        if plan is None:
            # Compared in SQL, as the sweeper does: SQLite hands back naive datetimes.
            expired = session.scalar(
                select(Job.updated_at < expired_before).where(Job.id == job.id)
            )
            if before in TERMINAL_JOB_STATUSES and expired:
                raise ApiError(
                    409,
                    f"Job {job.id} ended more than QUIRE_JOB_TTL ago and is being removed; "
                    "it can no longer be retried.",
                )
            if before == JobStatus.COMPLETED:
                raise ApiError(
                    409, f"Job {job.id} completed with no failed file: there is nothing to retry."
                )
            raise ApiError(
                409,
                f"Job {job.id} is {before.value}; only a job that has ended can be retried "
                "(cancel it first to stop it).",
            )
    log.info("job.retried job_id=%s files=%d", job.id, plan.files)
    try:
        # The job is IN_PROGRESS now, so nobody downloads the old archive; the new round
        # writes its own. A store outage only leaves it to be overwritten.
        store.delete_prefix(result_key(job.id))
    except StoreError:
        log.warning("job.retry_archive_not_removed job_id=%s", job.id, exc_info=True)
    # Queued only now, in a transaction of their own, and not in the one above: an archive
    # rebuilt at once (nothing to convert again) must not be the one just removed.
    with session_scope() as session:
        queue.queue_after_commit(session, queue.CONVERT_TASK, *plan.convert)
        if plan.ingest:  # failed before their input was copied: the ingest copies them now
            queue.queue_after_commit(session, queue.INGEST_TASK, job.id)
        if plan.archive_due:  # nothing to convert again: only the archive is rebuilt
            queue.queue_after_commit(session, queue.ARCHIVE_TASK, job.id)
    location = status_url(base, job.id)
    body = RetryStarted(
        job_id=job.id,
        status=JobStatus.IN_PROGRESS,
        retried_files=plan.files,
        status_url=location,
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": location}
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobCancelled,
    responses={
        200: _example("The job is CANCELLED", CANCEL_EXAMPLE),
        **responses(401, 403, 404, 409, 503),
    },
    summary="Cancel a job that has not ended",
    description=(
        "Allowed while the job is `PENDING` or `IN_PROGRESS` (409 once it has ended). The job "
        "is `CANCELLED` at once; every file not yet converted is `CANCELLED` with the message "
        f'"{CANCELLED_FILE_MESSAGE}". Workers drop its queued work, a conversion still running '
        "is discarded when it finishes, and no archive is built. Files already converted "
        "keep their `download_url`. A job with a `callback_url` gets its `job.cancelled` "
        "webhook. `POST .../retry` converts the cancelled files later."
    ),
)
def cancel_job(job_id: str, owner: OwnerDep, base: BaseUrlDep) -> JobCancelled:
    with session_scope() as session:
        job = visible_job(session, job_id, owner)
        before = job.status
        cancelled = transitions.cancel_job(session, job.id, CANCELLED_FILE_MESSAGE)
        if cancelled is None:
            raise ApiError(
                409,
                f"Job {job.id} has already ended ({before.value}); only a PENDING or "
                "IN_PROGRESS job can be cancelled.",
            )
        # In the transaction that ended the job, so the callback is never lost.
        webhooks.schedule_delivery(session, job.id)
    log.info("job.cancelled job_id=%s files=%d", job.id, cancelled)
    return JobCancelled(
        job_id=job.id,
        status=JobStatus.CANCELLED,
        cancelled_files=cancelled,
        status_url=status_url(base, job.id),
    )


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Deleted: the job, its rows and every object it had are gone"},
        **responses(401, 403, 404, 503),
    },
    summary="Delete a job, its files and its results",
    description=(
        "Removes the upload, every input and PDF, the archive, then the job's rows (its files "
        "and webhook deliveries); the job answers 404 afterwards. A job still running is "
        "cancelled first, so workers drop its work (no webhook is sent for it). On 503 (the "
        "object store or database was unreachable) nothing is lost: send the DELETE again."
    ),
)
def delete_job(job_id: str, owner: OwnerDep, store: StoreDep) -> Response:
    with session_scope() as session:
        job = visible_job(session, job_id, owner)
        if job.status in transitions.ACTIVE_JOB_STATUSES:
            # Committed before anything is removed: a worker that gets there later finds the
            # job ended (or gone) and writes nothing more.
            transitions.cancel_job(session, job.id, CANCELLED_FILE_MESSAGE)
    # Objects first, then rows: if this stops half-way the job still exists and a second
    # DELETE finishes it; the other order could leave objects nothing refers to.
    for prefix in job_prefixes(job.id):
        store.delete_prefix(prefix)
    with session_scope() as session:
        transitions.delete_job(session, job.id)
    log.info("job.deleted job_id=%s", job.id)
    return Response(status_code=204)
