"""A client's actions on a job: retry its failed files, cancel it, delete it
(``app.services.job_actions`` does them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.api.deps import BaseUrlDep, OwnerDep, SettingsDep, StoreDep, caller
from app.api.errors import responses
from app.models import JobStatus
from app.openapi import URI
from app.services import job_actions
from app.services.job_actions import CANCELLED_FILE_MESSAGE
from app.status import status_url

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(caller)])

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
    operation_id="retryJob",
    responses={
        202: {
            **_example("The failed files are queued again", RETRY_EXAMPLE),
            "headers": {"Location": {"description": "The job's status URL", "schema": URI}},
        },
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
    retried = job_actions.retry_job(job_id, owner, store, settings)
    location = status_url(base, retried.job_id)
    body = RetryStarted(
        job_id=retried.job_id,
        status=JobStatus.IN_PROGRESS,
        retried_files=retried.files,
        status_url=location,
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": location}
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobCancelled,
    operation_id="cancelJob",
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
    cancelled = job_actions.cancel_job(job_id, owner)
    return JobCancelled(
        job_id=cancelled.job_id,
        status=JobStatus.CANCELLED,
        cancelled_files=cancelled.files,
        status_url=status_url(base, cancelled.job_id),
    )


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    operation_id="deleteJob",
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
    job_actions.delete_job(job_id, owner, store)
    return Response(status_code=204)
