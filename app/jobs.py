"""The job service used by the API: create a job from a listed upload, and read it back."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Row, Table, func, insert, select
from sqlalchemy.orm import Session

from app.models import File, FileStatus, Job, JobStatus, new_id, utcnow
from app.zipinput import DocxEntry, output_names


def new_job_id() -> str:
    return str(uuid.uuid4())


def create_job(session: Session, job_id: str, entries: list[DocxEntry], upload_bytes: int) -> Job:
    """The job and one row per DOCX entry, in the caller's transaction (one bulk INSERT)."""
    now = utcnow()
    job = Job(
        id=job_id,
        status=JobStatus.PENDING,
        file_count=len(entries),
        upload_bytes=upload_bytes,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    names = output_names([entry.name for entry in entries])
    rows = [
        {
            "id": new_id(),
            "job_id": job_id,
            "position": entry.index,
            "filename": entry.name,
            "output_name": output_name,
            "status": FileStatus.PENDING,
            "attempts": 0,
            "touched_at": now,
        }
        for entry, output_name in zip(entries, names, strict=True)
    ]
    # Core executemany: one prepared statement for every row, without ORM bookkeeping.
    session.connection().execute(insert(cast(Table, File.__table__)), rows)
    return job


@dataclass(frozen=True)
class JobView:
    job: Job
    # Plain rows (id, filename, output_name, status, error_message), not ORM objects: a status
    # document of 10,000 files is read on every poll, so it skips the identity map.
    files: Sequence[Row[str, str, str, FileStatus, str | None]]

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
        select(File.id, File.filename, File.output_name, File.status, File.error_message)
        .where(File.job_id == job_id)
        .order_by(File.position)
    ).all()
    return JobView(job=job, files=files)


def files_touched_since(
    session: Session, job_id: str, since: datetime | None
) -> Sequence[Row[str, str, FileStatus, str | None, datetime]]:
    """Files of the job whose state may have changed since ``since`` (all of them for None)."""
    query = select(File.id, File.filename, File.status, File.error_message, File.touched_at).where(
        File.job_id == job_id
    )
    if since is not None:
        query = query.where(File.touched_at >= since)
    return session.execute(query.order_by(File.touched_at)).all()


def status_counts(session: Session, job_id: str) -> Counter[FileStatus]:
    rows = session.execute(
        select(File.status, func.count()).where(File.job_id == job_id).group_by(File.status)
    )
    return Counter({status: count for status, count in rows})
