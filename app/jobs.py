"""The job service used by the API: create a job from a listed upload, and read it back."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from app.models import File, FileStatus, Job, JobStatus, PdfA, Upload, time_ordered_ids, utcnow
from app.zipinput import DocxEntry, output_names


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused with a different request body (answered with 422)."""


class UploadGone(Exception):
    """The direct upload a job was to be made from was taken meanwhile: by another request
    that made it a job, or by the sweeper that expired it."""


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class JobSpec:
    """Everything a new job records besides its files."""

    job_id: str
    upload_bytes: int
    owner: str = ""
    pdf_a: PdfA | None = None
    tagged_pdf: bool = False
    strict_fonts: bool = False
    merge: bool = False
    merge_failure_page: bool = True
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_digest: str | None = None


def create_job(
    session: Session, spec: JobSpec, entries: list[DocxEntry], *, consume_upload: bool = False
) -> Job:
    """The job and one row per DOCX entry, in the caller's transaction (one bulk INSERT).

    ``consume_upload``: the job is made from a direct upload of the same id, whose row goes in
    the same transaction (so an upload becomes at most one job).
    """
    now = utcnow()
    job_id = spec.job_id
    if consume_upload:
        # First, and conditional: the row is what a concurrent request for the same upload and
        # the sweeper expiring it also delete, so exactly one of them gets it; whoever comes
        # second (after the winner's commit, on PostgreSQL) removes nothing and must stop.
        taken = session.execute(delete(Upload).where(Upload.id == job_id))
        if not getattr(taken, "rowcount", 0):
            raise UploadGone(job_id)
    job = Job(
        id=job_id,
        status=JobStatus.PENDING,
        file_count=len(entries),
        upload_bytes=spec.upload_bytes,
        owner=spec.owner,
        pdf_a=spec.pdf_a,
        tagged_pdf=spec.tagged_pdf,
        strict_fonts=spec.strict_fonts,
        merge=spec.merge,
        merge_failure_page=spec.merge_failure_page,
        callback_url=spec.callback_url,
        idempotency_key=spec.idempotency_key,
        request_digest=spec.request_digest,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    _insert_files(session, job_id, entries, now)
    return job


_FILE_COLUMNS = (
    "id",
    "job_id",
    "position",
    "filename",
    "output_name",
    "status",
    "attempts",
    "touched_at",
)


def _insert_files(session: Session, job_id: str, entries: list[DocxEntry], now: datetime) -> None:
    """One row per entry, as one driver-level executemany.

    The POST answers only after these rows exist, so their cost is on every upload's critical
    path. Going through SQLAlchemy's executemany ran each row's values through its type
    processors (the same timestamp and status a thousand times): a job of 1,000 files took
    7.3 ms to create and commit, and takes 5.1 ms this way (#3). Here the constant values are
    converted once, by the dialect's own processors, so they are stored exactly as the ORM
    stores them (a test reads them back through the ORM).
    """
    connection = session.connection()
    dialect = connection.dialect
    columns = cast(Table, File.__table__).c

    def as_stored(column: str, value: object) -> object:
        process = columns[column].type.dialect_impl(dialect).bind_processor(dialect)
        return process(value) if process is not None else value

    status, touched_at = as_stored("status", FileStatus.PENDING), as_stored("touched_at", now)
    markers = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # sqlite3; psycopg
    if dialect.paramstyle not in markers:
        raise NotImplementedError(f"no file-row insert for paramstyle {dialect.paramstyle!r}")
    marker = markers[dialect.paramstyle]
    # Only constant table and column names go into the text; the values are parameters.
    placeholders = ", ".join([marker] * len(_FILE_COLUMNS))
    statement = f"INSERT INTO files ({', '.join(_FILE_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    names = output_names([entry.name for entry in entries])
    ids = time_ordered_ids(len(entries))
    rows = [
        (file_id, job_id, entry.index, entry.name, output_name, status, 0, touched_at)
        for file_id, entry, output_name in zip(ids, entries, names, strict=True)
    ]
    if rows:
        connection.exec_driver_sql(statement, rows)


@dataclass(frozen=True)
class JobView:
    job: Job
    # Plain rows (id, filename, output_name, status, error_message, fonts), not ORM objects: a
    # status document of 10,000 files is read on every poll, so it skips the identity map.
    files: Sequence[Row[str, str, str, FileStatus, str | None, dict[str, Any] | None]]

    @property
    def counts(self) -> Counter[FileStatus]:
        return Counter(file.status for file in self.files)


def parse_job_id(raw: str) -> str | None:
    """The canonical form of a job id, or None when it cannot be one (answered with 404)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def get_job_view(session: Session, job_id: str) -> JobView | None:
    """The job and its files in two queries, however many files it has."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    files = session.execute(
        select(
            File.id, File.filename, File.output_name, File.status, File.error_message, File.fonts
        )
        .where(File.job_id == job_id)
        .order_by(File.position)
    ).all()
    return JobView(job=job, files=files)


def files_touched_since(
    session: Session, job_id: str, since: datetime | None
) -> Sequence[Row[str, str, FileStatus, str | None, datetime, dict[str, Any] | None]]:
    """Files of the job whose state may have changed since ``since`` (all of them for None)."""
    query = select(
        File.id, File.filename, File.status, File.error_message, File.touched_at, File.fonts
    ).where(File.job_id == job_id)
    if since is not None:
        query = query.where(File.touched_at >= since)
    return session.execute(query.order_by(File.touched_at)).all()


def status_counts(session: Session, job_id: str) -> Counter[FileStatus]:
    rows = session.execute(
        select(File.status, func.count()).where(File.job_id == job_id).group_by(File.status)
    )
    return Counter({status: count for status, count in rows})


def find_idempotent_job(session: Session, owner: str, key: str, digest: str) -> Job | None:
    """The job an earlier request with this Idempotency-Key created, if any.

    Raises IdempotencyConflict when that request's body differed: a key names one request,
    and reusing it for another is a client bug worth reporting, not something to paper over.
    """
    job = session.scalars(select(Job).where(Job.owner == owner, Job.idempotency_key == key)).first()
    if job is not None and job.request_digest != digest:
        raise IdempotencyConflict(
            f"The Idempotency-Key {key!r} was already used for another request (job {job.id}) "
            "with a different body; use a new key for a new job."
        )
    return job


@dataclass(frozen=True)
class Cursor:
    """Where a page of the jobs list ended: the last job's creation time and id."""

    created_at: datetime
    job_id: str

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.job_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            created, job_id = raw.split("|")
            return cls(datetime.fromisoformat(created), str(uuid.UUID(job_id)))
        except ValueError:
            return None


def list_jobs(
    session: Session,
    owner: str,
    *,
    status: JobStatus | None,
    limit: int,
    after: Cursor | None,
) -> tuple[Sequence[Job], Cursor | None]:
    """One page of the owner's jobs, newest first, and the cursor of the next page (keyset
    pagination: stable while jobs are added, and as fast on page 1,000 as on page 1)."""
    query = select(Job).where(Job.owner == owner)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        query = query.where(
            or_(
                Job.created_at < after.created_at,
                and_(Job.created_at == after.created_at, Job.id < after.job_id),
            )
        )
    jobs = session.scalars(
        query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    ).all()
    if len(jobs) <= limit:
        return jobs, None
    last = jobs[limit - 1]
    return jobs[:limit], Cursor(last.created_at, last.id)
