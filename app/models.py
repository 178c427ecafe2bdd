"""SQLAlchemy models and status enums: the job and file state, nothing HTTP."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class FileStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL_FILE_STATUSES = (FileStatus.COMPLETED, FileStatus.FAILED)
TERMINAL_JOB_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED)


class Base(DeclarativeBase):
    pass


# Timezone-aware timestamps on PostgreSQL; SQLite stores them as text and returns naive values,
# which the schemas layer marks as UTC.
Timestamp = DateTime(timezone=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.PENDING,
    )
    file_count: Mapped[int] = mapped_column(Integer)
    # Files that reached COMPLETED or FAILED, counted in the same transaction as each file's own
    # change, so the caller whose count reaches file_count knows it finished the job.
    finished_files: Mapped[int] = mapped_column(Integer, default=0)
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    # Set by exactly one caller (a conditional UPDATE) when every file is terminal; that caller
    # alone enqueues the archive task. Never reset, so the archive is built once per job.
    archive_enqueued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    result_bytes: Mapped[int | None] = mapped_column(BigInteger)

    files: Mapped[list[File]] = relationship(back_populates="job", order_by="File.position")

    __table_args__ = (Index("ix_jobs_status_updated", "status", "updated_at"),)


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # index of the entry in the zip's directory
    filename: Mapped[str] = mapped_column(Text)  # the entry's path inside the zip: data, not a path
    output_name: Mapped[str] = mapped_column(Text)  # unique name of the PDF inside the result zip
    status: Mapped[FileStatus] = mapped_column(
        Enum(FileStatus, name="file_status", native_enum=False, length=16),
        default=FileStatus.PENDING,
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_crc32: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Last time a worker or the sweeper touched the file; the sweeper re-sends stale ones.
    touched_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)

    job: Mapped[Job] = relationship(back_populates="files")

    __table_args__ = (
        Index("ix_files_job_position", "job_id", "position"),
        Index("ix_files_job_status", "job_id", "status"),
        Index("ix_files_status_touched", "status", "touched_at"),
    )
