"""A client's actions on a job: retry its failed files, cancel it, delete it.

Each is one transaction of conditional UPDATEs (``app.transitions``), committed before any task
is sent or any object removed, so workers always find the new state when they get there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from app import queue, scheduling, transitions, webhooks
from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
from app.models import TERMINAL_JOB_STATUSES, Job, JobStatus, utcnow
from app.services.errors import JobNotCancellable, JobNotRetryable
from app.services.jobs import visible_job
from app.storage import ObjectStore, StoreError, job_prefixes, merged_key, result_key

log = get_logger("quire.api")

CANCELLED_FILE_MESSAGE = "Cancelled before it was converted."


@dataclass(frozen=True)
class Retried:
    job_id: str
    files: int  # set back to PENDING


@dataclass(frozen=True)
class Cancelled:
    job_id: str
    files: int  # that will never be converted


def retry_job(raw_id: str, owner: str, store: ObjectStore, settings: Settings) -> Retried:
    """A new round of a finished job: its FAILED and CANCELLED files are converted again.

    Raises JobNotFound, or JobNotRetryable for a job still running, one with nothing failed,
    or one that ended more than QUIRE_JOB_TTL ago."""
    with session_scope() as session:
        job = visible_job(session, raw_id, owner)
        before = job.status
        expired_before = utcnow() - timedelta(seconds=settings.job_ttl)
        plan = transitions.retry_job(session, job.id, expired_before)
        if plan is None:
            # Compared in SQL, as the sweeper does: SQLite hands back naive datetimes.
            expired = session.scalar(
                select(Job.updated_at < expired_before).where(Job.id == job.id)
            )
            if before in TERMINAL_JOB_STATUSES and expired:
                raise JobNotRetryable(
                    f"Job {job.id} ended more than QUIRE_JOB_TTL ago and is being removed; "
                    "it can no longer be retried."
                )
            if before == JobStatus.COMPLETED:
                raise JobNotRetryable(
                    f"Job {job.id} completed with no failed file: there is nothing to retry."
                )
            raise JobNotRetryable(
                f"Job {job.id} is {before.value}; only a job that has ended can be retried "
                "(cancel it first to stop it)."
            )
    log.info("job.retried", job_id=job.id, files=plan.files)
    try:
        # The job is IN_PROGRESS now, so nobody downloads the old archive (or merged PDF);
        # the new round writes its own. A store outage only leaves them to be overwritten.
        store.delete_prefix(result_key(job.id))
        store.delete_prefix(merged_key(job.id))
    except StoreError:
        log.warning("job.retry_archive_not_removed", job_id=job.id, exc_info=True)
    # Queued only now, in a transaction of their own, and not in the one above: an archive
    # rebuilt at once (nothing to convert again) must not be the one just removed.
    with session_scope() as session:
        if plan.convert:  # back to waiting: the scheduler sends them in their turn
            scheduling.dispatch(session)
        if plan.ingest:  # failed before their input was copied: the ingest copies them now
            queue.queue_after_commit(session, queue.INGEST_TASK, job.id)
        if plan.archive_due:  # nothing to convert again: only the archive is rebuilt
            queue.queue_after_commit(session, queue.ARCHIVE_TASK, job.id)
    return Retried(job.id, plan.files)


def cancel_job(raw_id: str, owner: str) -> Cancelled:
    """End a PENDING or IN_PROGRESS job as CANCELLED; JobNotCancellable once it has ended."""
    with session_scope() as session:
        job = visible_job(session, raw_id, owner)
        before = job.status
        cancelled = transitions.cancel_job(session, job.id, CANCELLED_FILE_MESSAGE)
        if cancelled is None:
            raise JobNotCancellable(
                f"Job {job.id} has already ended ({before.value}); only a PENDING or "
                "IN_PROGRESS job can be cancelled."
            )
        # In the transaction that ended the job, so the callback is never lost.
        webhooks.schedule_delivery(session, job.id)
        scheduling.dispatch(session)  # its conversions in flight left room in the window
    log.info("job.cancelled", job_id=job.id, files=cancelled)
    return Cancelled(job.id, cancelled)


def delete_job(raw_id: str, owner: str, store: ObjectStore) -> None:
    """Remove the job's objects, then its rows; a job still running is cancelled first."""
    with session_scope() as session:
        job = visible_job(session, raw_id, owner)
        if job.status in transitions.ACTIVE_JOB_STATUSES:
            # Committed before anything is removed: a worker that gets there later finds the
            # job ended (or gone) and writes nothing more.
            transitions.cancel_job(session, job.id, CANCELLED_FILE_MESSAGE)
            scheduling.dispatch(session)
    # Objects first, then rows: if this stops half-way the job still exists and a second
    # DELETE finishes it; the other order could leave objects nothing refers to.
    for prefix in job_prefixes(job.id):
        store.delete_prefix(prefix)
    with session_scope() as session:
        transitions.delete_job(session, job.id)
    log.info("job.deleted", job_id=job.id)
