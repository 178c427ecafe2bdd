"""The job's status document: what ``GET /api/v1/jobs/{id}`` answers and what webhooks send.

One builder, so the API, the jobs list and the webhook body never disagree about a job.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from app import scheduling
from app.jobs import JobView, get_job_view
from app.models import TERMINAL_FILE_STATUSES, File, FileStatus, Job, JobStatus, utcnow
from app.schemas import (
    FileResult,
    FontCounts,
    FontReport,
    FontSubstitution,
    JobOptions,
    JobStatusResponse,
    JobSummary,
    Progress,
    WebhookStatus,
)
from app.storage import ObjectStore, output_key
from app.webhooks import latest_delivery


def absolute(base: str, url: str) -> str:
    """Presigned URLs of the local store are relative to the API; S3's are absolute already.

    (What ``urljoin(base + "/", url)`` gives for these two kinds, at a fraction of its cost: a
    10,000-file status builds 10,000 of them.)
    """
    if url.startswith(("http://", "https://")):
        return url
    return f"{base}/{url.lstrip('/')}"


def status_url(base: str, job_id: str) -> str:
    return f"{base}/api/v1/jobs/{job_id}"


def archive_url(base: str, job: Job) -> str | None:
    """Where the job's zip is downloaded from; only a COMPLETED job has one."""
    return f"{status_url(base, job.id)}/download" if job.status == JobStatus.COMPLETED else None


def merged_url(base: str, job: Job) -> str | None:
    """Where the job's merged PDF is downloaded from, once the archive task stored it.
    merged_bytes is set only by the archive task of a job with merge, and cleared by a retry."""
    if job.status != JobStatus.COMPLETED or job.merged_bytes is None:
        return None
    return f"{status_url(base, job.id)}/merged"


def file_download_url(
    store: ObjectStore, base: str, job_id: str, file_id: str, output_name: str, expires_in: int
) -> str:
    """A presigned, expiring URL of one file's PDF, named after its path in the result zip."""
    url = store.presigned_get_url(
        output_key(job_id, file_id),
        filename=posixpath.basename(output_name),
        content_type="application/pdf",
        expires_in=expires_in,
    )
    return absolute(base, url)


def font_report(raw: dict[str, Any] | None) -> FontReport | None:
    """A stored font report (workers/fonts.py wrote it) as its schema, without validating it
    again: a status document of 10,000 files builds 10,000 of them."""
    if raw is None:
        return None
    return FontReport.model_construct(
        substituted={
            family: FontSubstitution.model_construct(**used)
            for family, used in raw.get("substituted", {}).items()
        },
        missing=list(raw.get("missing", [])),
    )


def font_counts(reports: Iterable[dict[str, Any] | None]) -> FontCounts:
    """The job's summary of its files' font reports."""
    substituted = missing = 0
    for report in reports:
        if report:
            substituted += bool(report.get("substituted"))
            missing += bool(report.get("missing"))
    return FontCounts(files_with_substitutions=substituted, files_with_missing_fonts=missing)


def job_options(job: Job) -> JobOptions:
    return JobOptions(
        pdf_a=job.pdf_a,
        tagged_pdf=job.tagged_pdf,
        strict_fonts=job.strict_fonts,
        merge=job.merge,
        merge_failure_page=job.merge_failure_page,
    )


def job_summary(job: Job, base: str) -> JobSummary:
    """The job without its files: an entry of the jobs list."""
    return JobSummary(
        job_id=job.id,
        status=job.status,
        file_count=job.file_count,
        finished_files=job.finished_files,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        error_message=job.error_message,
        options=job_options(job),
        status_url=status_url(base, job.id),
    )


def _webhook(job: Job) -> WebhookStatus | None:
    """The job's latest callback delivery: one more query, and only for jobs with a callback."""
    session = object_session(job)
    if not job.callback_url or session is None:
        return None
    return latest_delivery(session, job.id)


# The service's recent rate, for estimated_start: the conversions that ended in this window.
RATE_WINDOW = timedelta(seconds=60)
CONVERTED = (FileStatus.COMPLETED, FileStatus.FAILED)


@dataclass(frozen=True)
class PlaceInLine:
    files_ahead: int = 0
    estimated_start: datetime | None = None


def conversions_per_second(session: Session, now: datetime) -> float:
    """Files the whole service converted (or failed) per second over the last RATE_WINDOW."""
    # A finished file's touched_at is set with its finished_at, in the same UPDATE, and
    # (status, touched_at) is indexed: this reads only the files that ended in the window (as
    # the quotas' rate does, app/services/quotas.py); finished_at has no index of its own.
    since = now - RATE_WINDOW
    finished = session.scalar(
        select(func.count()).where(
            File.status.in_(CONVERTED), File.touched_at >= since, File.finished_at >= since
        )
    )
    return (finished or 0) / RATE_WINDOW.total_seconds()


def place_in_line(view: JobView) -> PlaceInLine:
    """Where an active job none of whose files has started stands: the other jobs'
    conversions in flight start first (the scheduler never takes a sent file back)."""
    job, counts = view.job, view.counts
    session = object_session(job)
    # A file IN_PROGRESS or ended shows in the rows already read: no query for a started job.
    if (
        session is None
        or job.status not in (JobStatus.PENDING, JobStatus.IN_PROGRESS)
        or counts[FileStatus.PENDING] != len(view.files)
    ):
        return PlaceInLine()
    # Sent and not claimed yet is PENDING too: only the in-flight set tells (a window's rows).
    flying = scheduling.in_flight(session)
    if any(one.job_id == job.id for one in flying):
        return PlaceInLine()
    ahead = sum(one.count for one in flying)
    if not ahead:
        return PlaceInLine()
    now = utcnow()
    rate = conversions_per_second(session, now)
    if rate <= 0:
        return PlaceInLine(ahead)
    return PlaceInLine(ahead, now + timedelta(seconds=ahead / rate))


def status_document(
    view: JobView, base: str, store: ObjectStore, url_ttl: int
) -> JobStatusResponse:
    job, counts = view.job, view.counts
    place = place_in_line(view)
    total = len(view.files)
    finished = sum(counts[status] for status in TERMINAL_FILE_STATUSES)
    return JobStatusResponse(
        job_id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        error_message=job.error_message,
        download_url=archive_url(base, job),
        result_bytes=job.result_bytes,
        merged_url=merged_url(base, job),
        merged_bytes=job.merged_bytes,
        options=job_options(job),
        webhook=_webhook(job),
        progress=Progress(
            total=total,
            pending=counts[FileStatus.PENDING],
            in_progress=counts[FileStatus.IN_PROGRESS],
            completed=counts[FileStatus.COMPLETED],
            failed=counts[FileStatus.FAILED],
            cancelled=counts[FileStatus.CANCELLED],
            percent=round(100 * finished / total, 1) if total else 100.0,
        ),
        fonts=font_counts(file.fonts for file in view.files),
        files_ahead=place.files_ahead,
        estimated_start=place.estimated_start,
        # The rows come from the database as they were written: no need to validate them again
        # (the largest cost of answering a 10,000-file job).
        files=[
            FileResult.model_construct(
                file_id=file.id,
                filename=file.filename,
                output_name=file.output_name,
                status=file.status,
                error_message=file.error_message,
                fonts=font_report(file.fonts) if file.status == FileStatus.COMPLETED else None,
                download_url=(
                    file_download_url(store, base, job.id, file.id, file.output_name, url_ttl)
                    if file.status == FileStatus.COMPLETED
                    else None
                ),
            )
            for file in view.files
        ],
    )


def status_document_of(
    session: Session, job_id: str, base: str, store: ObjectStore, url_ttl: int
) -> JobStatusResponse | None:
    """The status document of a job by id, or None when the job is gone (webhooks use this)."""
    view = get_job_view(session, job_id)
    return status_document(view, base, store, url_ttl) if view is not None else None
