"""Reading jobs for their owner: which job a caller may see, and what it has to download."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.db import session_scope
from app.jobs import JobView, get_job_view, parse_job_id
from app.models import File, FileStatus, Job, JobStatus
from app.services.errors import ArchiveGone, FileNotFound, JobNotFound, NotReady
from app.storage import ObjectStore, merged_key, result_key


def visible_job(session: Session, raw_id: str, owner: str) -> Job:
    """The job with this id if the caller may see it; JobNotFound otherwise (another key's job
    too, so ids cannot be probed)."""
    job_id = parse_job_id(raw_id)
    job = session.get(Job, job_id) if job_id else None
    if job is None or job.owner != owner:
        raise JobNotFound(raw_id)
    return job


def visible_job_id(raw_id: str, owner: str) -> str:
    """The canonical id of a job the caller may see, in a short transaction of its own (for
    callers that must not hold a session, such as an event stream open for hours)."""
    with session_scope() as session:
        return visible_job(session, raw_id, owner).id


def job_view(session: Session, raw_id: str, owner: str) -> JobView:
    job = visible_job(session, raw_id, owner)
    view = get_job_view(session, job.id)
    assert view is not None  # the job was just read in this transaction
    return view


def completed_file(session: Session, raw_id: str, raw_file_id: str, owner: str) -> File:
    """A converted file of a job the caller may see, ready to download."""
    job = visible_job(session, raw_id, owner)
    # File ids are UUIDs: anything else names no file (and a NUL byte would be a database
    # error on PostgreSQL, not a 404).
    canonical = parse_job_id(raw_file_id)
    file = session.get(File, canonical) if canonical is not None else None
    if file is None or file.job_id != job.id:
        raise FileNotFound(f"Job {job.id} has no file with id {raw_file_id!r}.")
    if file.status == FileStatus.FAILED:
        raise NotReady(f"{file.filename} failed and has no PDF: {file.error_message}")
    if file.status != FileStatus.COMPLETED:
        raise NotReady(f"{file.filename} is {file.status.value}; it has no PDF yet.")
    return file


@dataclass(frozen=True)
class Archive:
    job_id: str
    key: str
    extension: str = "zip"

    @property
    def filename(self) -> str:
        return f"quire-{self.job_id}.{self.extension}"


def completed_archive(session: Session, store: ObjectStore, raw_id: str, owner: str) -> Archive:
    """The result zip of a job the caller may see, once it exists."""
    job = visible_job(session, raw_id, owner)
    if job.status == JobStatus.FAILED:
        raise NotReady(f"Job {job.id} failed and has no archive: {job.error_message}")
    if job.status == JobStatus.CANCELLED:
        raise NotReady(
            f"Job {job.id} was cancelled and has no archive; its converted files can be "
            "downloaded one by one (files[].download_url)."
        )
    if job.status != JobStatus.COMPLETED:
        raise NotReady(f"Job {job.id} is {job.status.value}; its archive is not ready yet.")
    key = result_key(job.id)
    if not store.exists(key):
        raise ArchiveGone(f"The archive of job {job.id} no longer exists.")
    return Archive(job.id, key)


def merged_pdf(session: Session, store: ObjectStore, raw_id: str, owner: str) -> Archive:
    """The merged PDF of a job the caller may see (option merge), once it was stored."""
    job = visible_job(session, raw_id, owner)
    if not job.merge:
        raise NotReady(
            f"Job {job.id} was submitted without merge=true and has no merged PDF; its zip "
            "(download_url) and each file's PDF are there."
        )
    if job.status == JobStatus.FAILED:
        raise NotReady(f"Job {job.id} failed and has no merged PDF: {job.error_message}")
    if job.status == JobStatus.CANCELLED:
        raise NotReady(f"Job {job.id} was cancelled and has no merged PDF.")
    if job.status != JobStatus.COMPLETED or job.merged_bytes is None:
        raise NotReady(f"Job {job.id} is {job.status.value}; its merged PDF is not ready yet.")
    key = merged_key(job.id)
    if not store.exists(key):
        raise ArchiveGone(f"The merged PDF of job {job.id} no longer exists.")
    return Archive(job.id, key, "pdf")
