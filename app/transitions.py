"""Every change of a file's or job's status, each one a conditional UPDATE.

Delivery is at least once, so any of these may run twice or concurrently for the same row;
the WHERE clauses make the second caller a no-op, which is how a redelivered task never counts
a file twice and how exactly one caller gets to start a job's archive.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Result,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import (
    TERMINAL_FILE_STATUSES,
    TERMINAL_JOB_STATUSES,
    Base,
    File,
    FileStatus,
    Job,
    JobStatus,
    Lock,
    Upload,
    WebhookDelivery,
    Worker,
    utcnow,
)


def _update(model: type[Base]) -> Update:
    """An UPDATE that leaves the session's objects alone: callers hold none, so the ORM's
    search for objects to synchronise is pure cost on the per-file path."""
    return update(model).execution_options(synchronize_session=False)


def _rowcount(result: Result[Any]) -> int:
    # UPDATE results are CursorResults; the generic Result type does not declare rowcount.
    return int(getattr(result, "rowcount", 0))


# The statements every file runs, built once on the tables (Core): building an UPDATE and
# passing it through the ORM cost about 0.2 ms of CPU each, more than SQLite takes to run it,
# and a conversion ran five of them (#3). Values that change come in as parameters.
FILES, JOBS = cast(Table, File.__table__), cast(Table, Job.__table__)
LOCKS = cast(Table, Lock.__table__)
_NOW = bindparam("now", type_=FILES.c.touched_at.type)

_CLAIM_FILE = (
    update(FILES)
    .where(FILES.c.id == bindparam("file_id"), FILES.c.status.not_in(TERMINAL_FILE_STATUSES))
    .values(
        status=FileStatus.IN_PROGRESS,
        attempts=FILES.c.attempts + 1,
        touched_at=_NOW,
        lease_token=bindparam("token"),
        lease_expires_at=bindparam("lease_until", type_=FILES.c.lease_expires_at.type),
    )
)
_COMPLETE_FILE = (
    update(FILES)
    .where(FILES.c.id == bindparam("file_id"), FILES.c.status.not_in(TERMINAL_FILE_STATUSES))
    .values(
        status=FileStatus.COMPLETED,
        output_bytes=bindparam("output_bytes"),
        output_crc32=bindparam("crc32"),
        fonts=bindparam("fonts"),  # the font report (workers/fonts.py)
        error_message=None,
        finished_at=_NOW,
        touched_at=_NOW,
        lease_expires_at=None,
        dispatched_at=None,  # no longer in flight: the scheduler's window has room again
    )
)
# Only the conversion whose claim is the file's latest may record it (its fencing token).
_COMPLETE_CLAIMED = _COMPLETE_FILE.where(FILES.c.lease_token == bindparam("token"))
_COUNT_FINISHED = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"))
    .values(finished_files=JOBS.c.finished_files + bindparam("count"), updated_at=_NOW)
    .returning(JOBS.c.finished_files, JOBS.c.file_count)
)
_CLAIM_ARCHIVE = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("job_id"),
        JOBS.c.archive_enqueued_at.is_(None),
        JOBS.c.status.not_in(TERMINAL_JOB_STATUSES),
        JOBS.c.finished_files >= JOBS.c.file_count,
    )
    # A fresh lease, as a file's claim starts one (and an ingest's old one no longer counts): a
    # worker that takes the archive renews it; if the claimer died before its send, it runs out
    # and the sweep sends the archive.
    .values(
        archive_enqueued_at=_NOW,
        updated_at=_NOW,
        lease_expires_at=bindparam("lease_until", type_=JOBS.c.lease_expires_at.type),
    )
    .returning(JOBS.c.id)
)


def start_job(session: Session, job_id: str) -> bool:
    result = session.execute(
        _update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PENDING)
        .values(status=JobStatus.IN_PROGRESS, updated_at=utcnow())
    )
    return _rowcount(result) > 0


def claim_file(session: Session, file_id: str, lease: timedelta | None = None) -> str | None:
    """Mark a file IN_PROGRESS unless it already finished, under a new lease of ``lease``
    (default QUIRE_LEASE_SECONDS): its fencing token, or None when there is nothing to do.

    A claim always wins over an earlier one (whose worker is presumed dead or was only slow):
    the new token fences the earlier conversion out of recording anything."""
    if lease is None:
        lease = timedelta(seconds=get_settings().lease_seconds)
    now, token = utcnow(), str(uuid.uuid4())
    result = session.execute(
        _CLAIM_FILE, {"file_id": file_id, "now": now, "token": token, "lease_until": now + lease}
    )
    return token if _rowcount(result) > 0 else None


def release_file(session: Session, file_id: str, token: str) -> bool:
    """Give a claimed file back (its task will be retried): the try does not count as one
    whose worker died, which is what ``attempts`` limits. Only the claim that holds ``token``
    may; the file holds no lease until a worker holds its retried message."""
    result = session.execute(
        _update(File)
        .where(File.id == file_id, File.status == FileStatus.IN_PROGRESS, File.lease_token == token)
        .values(
            status=FileStatus.PENDING,
            attempts=File.attempts - 1,
            touched_at=utcnow(),
            lease_token=None,
            lease_expires_at=None,
        )
    )
    return _rowcount(result) > 0


def complete_file(
    session: Session,
    file_id: str,
    *,
    output_bytes: int,
    crc32: int,
    token: str | None = None,
    fonts: dict[str, Any] | None = None,
) -> bool:
    """COMPLETE a file, with its font report; with ``token``, only if that claim is still the
    file's latest."""
    values = {
        "file_id": file_id,
        "output_bytes": output_bytes,
        "crc32": crc32,
        "fonts": fonts,
        "now": utcnow(),
    }
    if token is None:
        result = session.execute(_COMPLETE_FILE, values)
    else:
        result = session.execute(_COMPLETE_CLAIMED, values | {"token": token})
    return _rowcount(result) > 0


def fail_files(
    session: Session, file_ids: list[str], message: str, *, token: str | None = None
) -> int:
    """FAIL unfinished files; with ``token`` (one file), only if that claim is its latest."""
    if not file_ids:
        return 0
    fenced = true() if token is None else File.lease_token == token
    result = session.execute(
        _update(File)
        .where(File.id.in_(file_ids), File.status.not_in(TERMINAL_FILE_STATUSES), fenced)
        .values(
            status=FileStatus.FAILED,
            error_message=message,
            finished_at=utcnow(),
            touched_at=utcnow(),
            lease_expires_at=None,
            dispatched_at=None,
        )
    )
    return _rowcount(result)


# -- leases: a worker holds one on every file whose message it holds ---------------------------


def renew_leases(session: Session, file_ids: list[str], until: datetime) -> int:
    """Push the leases of unfinished ``file_ids`` to ``until`` (a heartbeat, or the sweeper
    after a re-send); the token stays, so renewing never fences anyone."""
    if not file_ids:
        return 0
    result = session.execute(
        _update(File)
        .where(File.id.in_(file_ids), File.status.not_in(TERMINAL_FILE_STATUSES))
        .values(lease_expires_at=until)
    )
    return _rowcount(result)


def _resendable() -> Any:
    """Unfinished files with an input to convert, in a running job."""
    return and_(
        File.status.not_in(TERMINAL_FILE_STATUSES),
        File.input_bytes.is_not(None),
        File.job_id.in_(select(Job.id).where(Job.status == JobStatus.IN_PROGRESS)),
    )


def expired_leases(session: Session, now: datetime, limit: int = 1000) -> list[str]:
    """Files whose lease ran out: the worker that held their message stopped renewing it."""
    rows = session.execute(
        select(File.id)
        .where(File.lease_expires_at < now, _resendable())
        .order_by(File.lease_expires_at)
        .limit(limit)
    )
    return list(rows.scalars())


def unleased(session: Session, file_ids: list[str], now: datetime) -> list[str]:
    """Those of ``file_ids`` that are unfinished and that no live lease covers."""
    if not file_ids:
        return []
    no_live_lease = or_(File.lease_expires_at.is_(None), File.lease_expires_at < now)
    rows = session.execute(
        select(File.id).where(File.id.in_(file_ids), no_live_lease, _resendable())
    )
    return list(rows.scalars())


# -- job leases: a worker holds one on every job whose ingest or archive message it holds ------


def renew_job_leases(session: Session, job_ids: list[str], until: datetime) -> int:
    """Push the leases of unfinished ``job_ids`` to ``until`` (a heartbeat holding their ingest
    or archive, or the sweeper after a re-send)."""
    if not job_ids:
        return 0
    result = session.execute(
        _update(Job)
        .where(Job.id.in_(job_ids), Job.status.not_in(TERMINAL_JOB_STATUSES))
        .values(lease_expires_at=until)
    )
    return _rowcount(result)


@dataclass(frozen=True)
class JobResends:
    """Jobs whose ingest or archive a dead worker held, and which still need it."""

    ingest: list[str]
    archive: list[str]

    def __bool__(self) -> bool:
        return bool(self.ingest or self.archive)

    @property
    def job_ids(self) -> list[str]:
        return self.ingest + self.archive


def _ingest_unfinished() -> Any:
    """Never started, or files left that no ingest copied yet: what the stale path re-ingests
    (``stale_pending_jobs``, and stale files not ingested)."""
    not_copied = select(File.id).where(
        File.job_id == Job.id, File.status == FileStatus.PENDING, File.input_bytes.is_(None)
    )
    return or_(Job.status == JobStatus.PENDING, not_copied.exists())


def _archive_claimed() -> Any:
    """The archive of this round was claimed and the job has not COMPLETED: what the stale path
    re-archives (``stale_archives``). Only a running job has a claimed archive."""
    return and_(Job.status == JobStatus.IN_PROGRESS, Job.archive_enqueued_at.is_not(None))


def _no_live_job_lease(now: datetime) -> Any:
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


def expired_job_leases(session: Session, now: datetime, limit: int = 100) -> JobResends:
    """Jobs whose lease ran out, with the task each still needs: the worker that held their
    ingest or archive message stopped renewing it. A job whose ingest ended and whose archive
    is not claimed needs neither, whatever its lease says."""
    archive = _archive_claimed()
    rows = session.execute(
        select(Job.id, archive)
        .where(
            Job.lease_expires_at < now,
            Job.status.not_in(TERMINAL_JOB_STATUSES),
            or_(archive, _ingest_unfinished()),
        )
        .order_by(Job.lease_expires_at)
        .limit(limit)
    ).all()
    return JobResends(
        ingest=[job_id for job_id, archiving in rows if not archiving],
        archive=[job_id for job_id, archiving in rows if archiving],
    )


def unleased_jobs(
    session: Session, ingests: list[str], archives: list[str], now: datetime
) -> JobResends:
    """Of the jobs whose ingest (``ingests``) or archive (``archives``) message a dead consumer
    left unacknowledged, those no live lease covers that still need that task: an old ingest
    message never re-sends an archive that is only waiting in the queue."""

    def still_needed(job_ids: list[str], needs: Any) -> list[str]:
        if not job_ids:
            return []
        rows = session.execute(
            select(Job.id).where(Job.id.in_(job_ids), _no_live_job_lease(now), needs)
        )
        return sorted(rows.scalars())

    return JobResends(
        ingest=still_needed(ingests, _ingest_unfinished()),
        archive=still_needed(archives, _archive_claimed()),
    )


def dispatched_unleased(
    session: Session, sent_before: datetime, now: datetime, limit: int = 1000
) -> list[str]:
    """PENDING files of running jobs that the scheduler sent before ``sent_before`` and that no
    live lease covers: their message waits in the broker, or it was lost."""
    no_live_lease = or_(File.lease_expires_at.is_(None), File.lease_expires_at < now)
    rows = session.execute(
        select(File.id)
        .where(
            File.dispatched_at < sent_before,
            File.status == FileStatus.PENDING,
            no_live_lease,
            File.job_id.in_(select(Job.id).where(Job.status == JobStatus.IN_PROGRESS)),
        )
        .order_by(File.dispatched_at)
        .limit(limit)
    )
    return list(rows.scalars())


def redispatch(
    session: Session, file_ids: list[str], sent_before: datetime, now: datetime
) -> list[str]:
    """Mark ``file_ids`` sent again at ``now``, those still PENDING and sent before
    ``sent_before`` (one that a worker claimed meanwhile is left alone); the ones marked."""
    if not file_ids:
        return []
    marked = session.execute(
        update(FILES)
        .where(
            FILES.c.id.in_(file_ids),
            FILES.c.status == FileStatus.PENDING,
            FILES.c.dispatched_at < sent_before,
        )
        .values(dispatched_at=now)
        .returning(FILES.c.id)
    )
    return sorted(marked.scalars())


def record_finished(session: Session, job_id: str, count: int) -> bool:
    """Count ``count`` files of the job that just became terminal, in the caller's transaction.

    Returns True for exactly one caller: the one whose count finished the job and so claimed
    its archive; it sends the archive task after its transaction commits. The increment locks
    the job row, so concurrent finishers count one after another and only the last one sees
    every file finished.
    """
    if count <= 0:
        return False
    counts = session.execute(
        _COUNT_FINISHED, {"job_id": job_id, "count": count, "now": utcnow()}
    ).first()
    # The job row stays locked by this UPDATE until commit, so these counts are the ones
    # claim_archive would see: while files are left, it could only answer False.
    if counts is None or counts.finished_files < counts.file_count:
        return False
    return claim_archive(session, job_id)


def claim_archive(session: Session, job_id: str) -> bool:
    """Set the job's "archive enqueued" mark if every file is terminal and nobody set it yet,
    under a lease of QUIRE_LEASE_SECONDS."""
    now = utcnow()
    lease_until = now + timedelta(seconds=get_settings().lease_seconds)
    result = session.execute(
        _CLAIM_ARCHIVE, {"job_id": job_id, "now": now, "lease_until": lease_until}
    )
    return result.first() is not None


def finish_job(
    session: Session,
    job_id: str,
    *,
    result_bytes: int,
    claimed_at: datetime | None = None,
    merged_bytes: int | None = None,
) -> bool:
    """The job COMPLETED with its archive (and its merged PDF, if it asked for one).
    ``claimed_at``: the archive_enqueued_at its archive task started from; a task of an
    earlier round (the job was retried since) changes nothing."""
    same_round = true() if claimed_at is None else Job.archive_enqueued_at == claimed_at
    result = session.execute(
        _update(Job)
        .where(Job.id == job_id, Job.status.not_in(TERMINAL_JOB_STATUSES), same_round)
        .values(
            status=JobStatus.COMPLETED,
            result_bytes=result_bytes,
            merged_bytes=merged_bytes,
            lease_expires_at=None,  # ended: the lease sweep never needs to look at it again
            completed_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    return _rowcount(result) > 0


def fail_job(session: Session, job_id: str, message: str) -> bool:
    """The job as a whole failed: it and every file still unfinished end FAILED with ``message``."""
    unfinished = session.execute(
        select(File.id).where(File.job_id == job_id, File.status.not_in(TERMINAL_FILE_STATUSES))
    ).scalars()
    fail_files(session, list(unfinished), message)
    result = session.execute(
        _update(Job)
        .where(Job.id == job_id, Job.status.not_in(TERMINAL_JOB_STATUSES))
        .values(
            status=JobStatus.FAILED,
            error_message=message,
            lease_expires_at=None,
            completed_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    return _rowcount(result) > 0


# -- named locks -------------------------------------------------------------------------------


def take_lock(session: Session, name: str, holder: str, until: datetime) -> bool:
    """Take (or renew, for the same ``holder``) the lock ``name`` until ``until``; False while
    someone else holds it. One conditional UPDATE, or the first INSERT: either succeeds for
    one caller only, on SQLite and PostgreSQL alike."""
    now = utcnow()
    result = session.execute(
        _update(Lock)
        .where(Lock.name == name, or_(Lock.expires_at < now, Lock.holder == holder))
        .values(holder=holder, expires_at=until)
    )
    if _rowcount(result):
        return True
    # Never taken yet: the first INSERT wins; a concurrent one (or a live holder's row) makes
    # this one insert nothing, without an error that would end the transaction on PostgreSQL.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = session.execute(
        insert(LOCKS)
        .values(name=name, holder=holder, expires_at=until)
        .on_conflict_do_nothing(index_elements=[LOCKS.c.name])
        .returning(LOCKS.c.name)
    )
    return inserted.first() is not None


def release_lock(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))


# -- the workers' registry: what the scheduler sizes its window from (app/scheduling.py) -------


def register_worker(session: Session, name: str, slots: int, until: datetime) -> None:
    """Record (or renew) a live worker with ``slots`` conversion processes until ``until``."""
    updated = session.execute(
        _update(Worker).where(Worker.name == name).values(slots=slots, expires_at=until)
    )
    if _rowcount(updated):
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = cast(Table, Worker.__table__)
    session.execute(
        insert(table)
        .values(name=name, slots=slots, expires_at=until)
        .on_conflict_do_update(
            index_elements=[table.c.name], set_={"slots": slots, "expires_at": until}
        )
    )


def forget_worker(session: Session, name: str) -> None:
    """A worker that stops cleanly leaves at once: the window narrows now, not a lease later."""
    session.execute(delete(Worker).where(Worker.name == name))


def touch_files(session: Session, file_ids: list[str]) -> None:
    if file_ids:
        session.execute(_update(File).where(File.id.in_(file_ids)).values(touched_at=utcnow()))


@dataclass(frozen=True)
class StaleFile:
    file_id: str
    job_id: str
    ingested: bool  # its input object was written
    in_progress: bool  # a worker claimed it (and, being stale, presumably died)
    job_idle: bool  # nothing happened in its job for as long (no ingest batch, no file finished)
    leased: bool = False  # a live worker holds its message (its lease has not run out)


def stale_files(
    session: Session,
    older_than: timedelta,
    *,
    include_in_progress: bool = False,
    limit: int = 1000,
) -> list[StaleFile]:
    """Unfinished files nobody touched for a while: their message was lost or their worker died.

    ``include_in_progress`` takes every IN_PROGRESS file whatever its age: right when no worker
    can be running (the embedded runner's start).
    """
    cutoff: datetime = utcnow() - older_than
    stale = File.touched_at < cutoff
    if include_in_progress:
        stale = stale | (File.status == FileStatus.IN_PROGRESS)
    rows = session.execute(
        select(
            File.id,
            File.job_id,
            File.input_bytes.is_not(None),
            File.status,
            Job.updated_at < cutoff,
            File.lease_expires_at,
        )
        .join(Job, Job.id == File.job_id)
        .where(
            File.status.not_in(TERMINAL_FILE_STATUSES),
            stale,
            Job.status == JobStatus.IN_PROGRESS,
            # Copied and never sent: waiting for the scheduler (app/scheduling.py), not lost.
            ~and_(
                File.status == FileStatus.PENDING,
                File.input_bytes.is_not(None),
                File.dispatched_at.is_(None),
            ),
        )
        .limit(limit)
    )
    now = utcnow()
    return [
        StaleFile(
            file_id,
            job_id,
            bool(ingested),
            status == FileStatus.IN_PROGRESS,
            bool(idle),
            leased=lease is not None and _aware(lease) >= now,
        )
        for file_id, job_id, ingested, status, idle, lease in rows
    ]


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def unstarted_unleased_jobs(
    session: Session, submitted_before: datetime, now: datetime, limit: int = 100
) -> list[str]:
    """Jobs still PENDING (no ingest has started them) that were submitted before
    ``submitted_before`` and that no live lease covers: their ingest message waits in the
    control queue, or it was lost before any worker leased it."""
    no_live_lease = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
    rows = session.execute(
        select(Job.id)
        .where(Job.status == JobStatus.PENDING, Job.created_at < submitted_before, no_live_lease)
        .order_by(Job.created_at)
        .limit(limit)
    )
    return list(rows.scalars())


def stale_pending_jobs(session: Session, older_than: timedelta, limit: int = 100) -> list[str]:
    """Jobs accepted but never ingested: the ingest message was lost."""
    rows = session.execute(
        select(Job.id)
        .where(Job.status == JobStatus.PENDING, Job.updated_at < utcnow() - older_than)
        .limit(limit)
    )
    return list(rows.scalars())


def jobs_ready_for_archive(session: Session, limit: int = 100) -> list[str]:
    """Jobs whose files all finished but whose archive was never claimed (a worker died between)."""
    rows = session.execute(
        select(Job.id)
        .where(
            Job.status == JobStatus.IN_PROGRESS,
            Job.archive_enqueued_at.is_(None),
            Job.finished_files >= Job.file_count,
        )
        .limit(limit)
    )
    return list(rows.scalars())


def stale_archives(session: Session, older_than: timedelta, limit: int = 100) -> list[str]:
    """Jobs whose archive was claimed long ago but never finished: the archive task was lost."""
    rows = session.execute(
        select(Job.id)
        .where(
            Job.status == JobStatus.IN_PROGRESS,
            Job.archive_enqueued_at.is_not(None),
            Job.updated_at < utcnow() - older_than,
        )
        .limit(limit)
    )
    return list(rows.scalars())


def expired_jobs(session: Session, older_than: timedelta, limit: int = 100) -> list[str]:
    """Finished jobs whose time to live has passed."""
    rows = session.execute(
        select(Job.id)
        .where(Job.status.in_(TERMINAL_JOB_STATUSES), Job.updated_at < utcnow() - older_than)
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list(rows.scalars())


def delete_job(session: Session, job_id: str) -> None:
    # Children first, explicitly: foreign keys cascade only where the database enforces them.
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
    session.execute(delete(File).where(File.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))


def touch_job(session: Session, job_id: str) -> None:
    session.execute(_update(Job).where(Job.id == job_id).values(updated_at=utcnow()))


def job_of_file(file_id: str) -> Select[str]:
    return select(File.job_id).where(File.id == file_id)


# -- a client's actions on a job: cancel and retry ----------------------------------------------

ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.IN_PROGRESS)
RETRIED_FILE_STATUSES = (FileStatus.FAILED, FileStatus.CANCELLED)


def cancel_job(session: Session, job_id: str, message: str) -> int | None:
    """End an unfinished job CANCELLED; its unfinished files end CANCELLED with ``message``.

    Returns how many files were cancelled, or None when the job had already ended (or does not
    exist); then the caller rolls back. Workers drop the rest: a cancelled file is terminal, so
    a queued conversion's claim and a running one's completion both find nothing to do, and a
    cancelled job never claims its archive. Files are locked before the job, in the order a
    worker finishing a file takes them (its file, then the job's count), so the two cannot
    deadlock on PostgreSQL.
    """
    now = utcnow()
    active = select(Job.id).where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES)).exists()
    files = session.execute(
        _update(File)
        .where(File.job_id == job_id, File.status.not_in(TERMINAL_FILE_STATUSES), active)
        .values(
            status=FileStatus.CANCELLED,
            error_message=message,
            finished_at=now,
            touched_at=now,
            dispatched_at=None,
        )
    )
    job = session.execute(
        _update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status=JobStatus.CANCELLED, completed_at=now, updated_at=now, lease_expires_at=None)
    )
    return _rowcount(files) if _rowcount(job) else None


@dataclass(frozen=True)
class RetryPlan:
    """What a retry set going, to be sent once its transaction committed."""

    convert: list[str]  # retried files whose input object exists
    ingest: list[str]  # retried files never ingested: their job's ingest copies them
    archive_due: bool  # nothing to convert again: this caller claimed the archive

    @property
    def files(self) -> int:
        return len(self.convert) + len(self.ingest)


def retry_job(
    session: Session, job_id: str, expired_before: datetime | None = None
) -> RetryPlan | None:
    """Start a new round of a finished job: its FAILED and CANCELLED files back to PENDING.

    Allowed for a FAILED or CANCELLED job, and for a COMPLETED one with FAILED files; None
    otherwise (still running, nothing to retry, or no such job). COMPLETED files keep their
    PDFs. The job is IN_PROGRESS again with its archive unclaimed, so the file that finishes
    the new round claims a new archive of every completed PDF; ``finished_files`` is counted
    afresh from the files that stay finished.

    ``expired_before``: a job that ended before then has outlived QUIRE_JOB_TTL and may be
    under removal by the sweeper (which lists it, then removes its objects and rows): it is
    not started again. A job the sweeper listed always ended before then, so a retry never
    restarts a job that is about to vanish.
    """
    now = utcnow()
    alive = true() if expired_before is None else Job.updated_at >= expired_before
    has_failed = (
        select(File.id).where(File.job_id == job_id, File.status == FileStatus.FAILED).exists()
    )
    job = session.execute(
        _update(Job)
        .where(
            Job.id == job_id,
            alive,
            or_(
                Job.status.in_((JobStatus.FAILED, JobStatus.CANCELLED)),
                and_(Job.status == JobStatus.COMPLETED, has_failed),
            ),
        )
        .values(
            status=JobStatus.IN_PROGRESS,
            archive_enqueued_at=None,
            lease_expires_at=None,  # a new round: no worker holds its ingest or archive yet
            completed_at=None,
            result_bytes=None,
            merged_bytes=None,  # the new round's archive writes the merged PDF again
            error_message=None,
            updated_at=now,
        )
    )
    if not _rowcount(job):
        return None
    retried = session.execute(
        update(FILES)
        .where(FILES.c.job_id == job_id, FILES.c.status.in_(RETRIED_FILE_STATUSES))
        .values(
            status=FileStatus.PENDING,
            attempts=0,
            error_message=None,
            output_bytes=None,
            output_crc32=None,
            finished_at=None,
            touched_at=now,  # the sweeper counts the new wait from now
            dispatched_at=None,  # waiting for the scheduler again
        )
        .returning(FILES.c.id, FILES.c.input_bytes)
    ).all()
    finished = (
        select(func.count())
        .select_from(FILES)
        .where(FILES.c.job_id == job_id, FILES.c.status.in_(TERMINAL_FILE_STATUSES))
        .scalar_subquery()
    )
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(finished_files=finished))
    return RetryPlan(
        convert=[file_id for file_id, size in retried if size is not None],
        ingest=[file_id for file_id, size in retried if size is None],
        archive_due=not retried and claim_archive(session, job_id),
    )


def touch_archive(session: Session, job_id: str, claimed_at: datetime) -> bool:
    """Mark the job's archive as alive, if it is still the one of this round: False when the
    job was cancelled, deleted or retried since ``claimed_at`` (its archive_enqueued_at)."""
    result = session.execute(
        _update(Job)
        .where(
            Job.id == job_id,
            Job.status.not_in(TERMINAL_JOB_STATUSES),
            Job.archive_enqueued_at == claimed_at,
        )
        .values(updated_at=utcnow())
    )
    return _rowcount(result) > 0


def expired_uploads(session: Session, grace: timedelta, limit: int = 100) -> list[str]:
    """Direct uploads that expired more than ``grace`` ago without becoming a job."""
    rows = session.execute(
        select(Upload.id).where(Upload.expires_at < utcnow() - grace).limit(limit)
    )
    return list(rows.scalars())


def delete_upload(session: Session, upload_id: str, expired_before: datetime) -> bool:
    """Take an expired upload's row; False when it is gone (made a job since it was listed).

    Conditional like every transition: a job created from it deletes the same row in its own
    transaction (``app.jobs.create_job``), so exactly one of the two gets it."""
    result = session.execute(
        delete(Upload)
        .where(Upload.id == upload_id, Upload.expires_at < expired_before)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0
