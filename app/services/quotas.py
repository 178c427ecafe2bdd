"""Per-key quotas on submissions: ``QUIRE_MAX_ACTIVE_JOBS_PER_KEY`` and
``QUIRE_MAX_QUEUED_FILES_PER_KEY`` (unset: no limit).

What is counted, per owner (``jobs.owner``: the API key's digest, or "" for every client when
the server has no keys, so that the quotas then bound all submissions together):

- active jobs: the owner's jobs that have not ended, PENDING or IN_PROGRESS;
- queued files: the files of those jobs that are not finished yet (neither COMPLETED nor
  FAILED), read as ``file_count - finished_files`` of each active job.

A submission that would take the owner past a quota is refused with ``QuotaExceeded`` (429)
and a Retry-After estimate; a job with more files than the queued-files quota could never be
accepted, so it is refused as too large (413) instead of being told to wait.

Checked twice. ``check_before_upload`` runs before a multipart body is received, so a body that
would be refused is not stored: it refuses when no job could be accepted now (the active-jobs
quota is full, or no file fits under the queued-files quota). ``admit`` runs in the transaction
that creates the job, once its file count is known, under a lock per owner held until that
transaction ends: two submissions racing for the last slot are counted one after the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import false, func, select, text, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
from app.models import File, FileStatus, Job, JobStatus, utcnow
from app.services.errors import QuotaExceeded
from app.zipinput import UploadRejected

log = get_logger("quire.api")

ACTIVE = (JobStatus.PENDING, JobStatus.IN_PROGRESS)
FINISHED = (FileStatus.COMPLETED, FileStatus.FAILED)
# Retry-After: the files to wait for divided by the owner's recent rate (files of its active
# jobs that finished in the last RATE_WINDOW), within these bounds; UNKNOWN_WAIT when none
# finished lately (its jobs wait behind others', or have just started).
RATE_WINDOW = timedelta(seconds=60)
MIN_WAIT = 1
MAX_WAIT = 60  # a client asks again at least every minute: slots may free sooner than estimated
UNKNOWN_WAIT = 15
# PostgreSQL advisory locks are keyed by two integers: this one names the quota lock (its
# letters, "QUIR"), the other is taken from the owner's digest.
LOCK_SPACE = 0x51554952


@dataclass(frozen=True)
class Usage:
    active_jobs: int
    queued_files: int
    # Unfinished files of the active job closest to its end: what a new job slot waits for.
    nearest_job_files: int


def enabled(settings: Settings) -> bool:
    limits = (settings.max_active_jobs_per_key, settings.max_queued_files_per_key)
    return any(limit is not None for limit in limits)


def usage(session: Session, owner: str) -> Usage:
    remaining = Job.file_count - Job.finished_files
    active, queued, nearest = session.execute(
        select(func.count(), func.coalesce(func.sum(remaining), 0), func.min(remaining)).where(
            Job.owner == owner, Job.status.in_(ACTIVE)
        )
    ).one()
    return Usage(int(active), max(0, int(queued)), max(0, int(nearest or 0)))


def lock_owner(session: Session, owner: str) -> None:
    """Hold the owner's quota lock until the session's transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # The digest's first 8 hex digits as a signed 32-bit integer; "" (no keys) is 0. Two
        # owners sharing a key only wait for each other, they are still counted apart.
        digits = int(owner[:8], 16) if owner else 0
        key = digits - (1 << 32) if digits >= 1 << 31 else digits
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": LOCK_SPACE, "key": key}
        )
    else:
        # SQLite has one writer at a time: an UPDATE, even of no row, makes this transaction
        # that writer until it ends, so a concurrent submission counts after this one commits.
        session.execute(update(Job).where(false()).values(owner=Job.owner))


def _recent_rate(session: Session, owner: str) -> float:
    """Files per second the owner's active jobs finished lately."""
    active_jobs = select(Job.id).where(Job.owner == owner, Job.status.in_(ACTIVE))
    # A finished file's touched_at is when it finished (the same UPDATE sets both), and
    # (status, touched_at) is indexed: the scan covers the files that finished in the window,
    # whatever the table's size. On finished_at, PostgreSQL scanned every file (57 ms for
    # 105,000 rows).
    finished = session.scalar(
        select(func.count()).where(
            File.status.in_(FINISHED),
            File.touched_at >= utcnow() - RATE_WINDOW,
            File.job_id.in_(active_jobs),
        )
    )
    return (finished or 0) / RATE_WINDOW.total_seconds()


def retry_after(session: Session, owner: str, files_to_wait_for: int) -> int:
    rate = _recent_rate(session, owner)
    if rate <= 0:
        return UNKNOWN_WAIT
    return max(MIN_WAIT, min(MAX_WAIT, math.ceil(files_to_wait_for / rate)))


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _whose(owner: str) -> str:
    return "per API key" if owner else "on this server"


def _refuse(
    session: Session, owner: str, settings: Settings, current: Usage, incoming: int
) -> QuotaExceeded | None:
    """The refusal a job of ``incoming`` files gets now, or None when it fits."""
    jobs_limit = settings.max_active_jobs_per_key
    if jobs_limit is not None and current.active_jobs >= jobs_limit:
        wait = retry_after(session, owner, current.nearest_job_files)
        return QuotaExceeded(
            f"Quota reached: {_counted(current.active_jobs, 'active job')} of {jobs_limit} allowed "
            f"{_whose(owner)}. A new job is accepted once one of them ends; try again in "
            f"about {wait} s.",
            quota="active_jobs",
            limit=jobs_limit,
            current=current.active_jobs,
            retry_after=wait,
        )
    files_limit = settings.max_queued_files_per_key
    if files_limit is not None and current.queued_files + incoming > files_limit:
        excess = current.queued_files + incoming - files_limit
        wait = retry_after(session, owner, excess)
        this_job = f"this job's {incoming} files" if incoming > 1 else "another file"
        return QuotaExceeded(
            f"Quota reached: {_counted(current.queued_files, 'file')} waiting or converting of "
            f"{files_limit} allowed {_whose(owner)}, no room for {this_job}. It fits once "
            f"{excess} of them {'has' if excess == 1 else 'have'} finished; try again in about "
            f"{wait} s.",
            quota="queued_files",
            limit=files_limit,
            current=current.queued_files,
            retry_after=wait,
        )
    return None


def _log(owner: str, refusal: QuotaExceeded) -> None:
    log.info(
        "quota.refused",
        owner=owner[:12],
        quota=refusal.quota,
        limit=refusal.limit,
        current=refusal.current,
        retry_after=refusal.retry_after,
    )


def check_before_upload(owner: str, settings: Settings, idempotency_key: str | None) -> None:
    """Refuse a submission before its body is received when no job could be accepted now.

    A request whose Idempotency-Key already made a job passes: it may be that request again,
    answered with its job whatever the quotas. Takes no lock: ``admit`` decides, in the
    transaction that creates the job."""
    if not enabled(settings):
        return
    with session_scope() as session:
        if idempotency_key is not None and session.scalar(
            select(Job.id).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
        ):
            return
        refusal = _refuse(session, owner, settings, usage(session, owner), incoming=1)
    if refusal is not None:
        _log(owner, refusal)
        raise refusal


def admit(session: Session, owner: str, settings: Settings, file_count: int) -> None:
    """Lock the owner's quotas for this transaction and refuse a job of ``file_count`` files
    that would exceed one. Call it in the transaction that creates the job, before creating
    it: the lock is what keeps two concurrent submissions from both taking the last slot."""
    if not enabled(settings):
        return
    files_limit = settings.max_queued_files_per_key
    if files_limit is not None and file_count > files_limit:
        raise UploadRejected(
            413,
            f"This job has {file_count} files, more than the {files_limit} files that may wait "
            f"for conversion at once {_whose(owner)}: send it as jobs of at most "
            f"{files_limit} files.",
        )
    lock_owner(session, owner)
    refusal = _refuse(session, owner, settings, usage(session, owner), file_count)
    if refusal is not None:
        _log(owner, refusal)
        raise refusal
