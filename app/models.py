"""SQLAlchemy models and status enums: the job and file state, nothing HTTP."""

from __future__ import annotations

import enum
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false, true


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def time_ordered_ids(count: int) -> list[str]:
    """``count`` UUIDs in the version 7 layout (milliseconds first, then 74 random bits).

    A job's file rows are inserted together; ids that sort together land side by side in the
    primary-key index instead of on random pages all over it, which keeps the insert's cost
    flat as the table grows (measured: 1,000 rows beside 100,000 others, 27 ms -> 11 ms).
    """
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    noise = bytearray(os.urandom(10 * count))
    # The version (7) in the high nibble of the id's 7th byte, the variant (0b10) in the top
    # bits of its 9th, where RFC 9562 puts them: bytes 0 and 2 of each id's ten random ones.
    noise[0::10] = bytes(0x70 | (byte & 0x0F) for byte in noise[0::10])
    noise[2::10] = bytes(0x80 | (byte & 0x3F) for byte in noise[2::10])
    ids = []
    for start in range(0, 10 * count, 10):
        digits = (stamp + noise[start : start + 10]).hex()
        ids.append(f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}")
    return ids


def _enum_values(members: type[enum.StrEnum]) -> list[str]:
    # Store the values ("2b"), not the member names ("PDF_A_2B").
    return [member.value for member in members]


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class FileStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class PdfA(enum.StrEnum):
    """PDF/A conformance levels LibreOffice's PDF export writes (its SelectPdfVersion 1, 2, 3)."""

    PDF_A_1B = "1b"
    PDF_A_2B = "2b"
    PDF_A_3B = "3b"


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"  # due at next_attempt_at
    DELIVERED = "DELIVERED"  # the receiver answered 2xx
    FAILED = "FAILED"  # gave up after the last attempt


TERMINAL_FILE_STATUSES = (FileStatus.COMPLETED, FileStatus.FAILED, FileStatus.CANCELLED)
TERMINAL_JOB_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


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
    # Who may see the job: a digest of the API key that created it ("" when keys are off).
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Idempotency-Key of the creating request and a digest of its body: the same key with the
    # same body answers with this job again; with another body it is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Output options, chosen at submission and applied to every file of the job.
    pdf_a: Mapped[PdfA | None] = mapped_column(
        Enum(PdfA, name="pdf_a", native_enum=False, length=4, values_callable=_enum_values)
    )
    tagged_pdf: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Fail a file whose PDF had to fall back to a generic font for one it asks for (the report in
    # File.fonts names them).
    strict_fonts: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Besides the per-file PDFs and the zip, one PDF of the whole job in the files' order; with
    # merge_failure_page, a last page lists the files left out and why.
    merge: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    merge_failure_page: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    merged_bytes: Mapped[int | None] = mapped_column(
        BigInteger
    )  # set once the merged PDF is stored
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    # Set by exactly one caller (a conditional UPDATE) when every file is terminal; that caller
    # alone enqueues the archive task. Reset only by a retry of a finished job, so the archive
    # is built once per round of conversions.
    archive_enqueued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # While a worker holds the job's ingest or archive message, its heartbeat keeps this in the
    # future (workers/leases.py); past it, the sweeper re-sends the ingest or the archive the job
    # still needs. None: no worker has held it since its archive was claimed.
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    result_bytes: Mapped[int | None] = mapped_column(BigInteger)

    files: Mapped[list[File]] = relationship(back_populates="job", order_by="File.position")

    __table_args__ = (
        Index("ix_jobs_status_updated", "status", "updated_at"),
        Index("ix_jobs_lease_expires", "lease_expires_at"),
        # The jobs list pages by (created_at, id) within one owner.
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ux_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )


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
    # While a worker holds the file's message, its heartbeat keeps this in the future
    # (workers/leases.py); past it, the worker is presumed dead and the sweeper re-sends the file.
    # None: no worker holds it, or it finished.
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The fencing token of the conversion that claimed the file last: only that conversion may
    # record its result, so a worker that was only slow cannot overwrite its successor's.
    lease_token: Mapped[str | None] = mapped_column(String(36))
    # When the scheduler sent the file's conversion message (app/scheduling.py). None while the
    # file waits its turn in the database, and again once it finished: the rows that hold a time
    # are exactly the conversions in flight, so counting them stays cheap however big the jobs.
    dispatched_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The font report of a COMPLETED file (workers/fonts.py): {"substituted": {requested:
    # {"used", "metric_compatible"}}, "missing": [requested, ...]}. None until it converted.
    fonts: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="files")

    __table_args__ = (
        Index("ix_files_job_position", "job_id", "position"),
        Index("ix_files_job_status", "job_id", "status"),
        Index("ix_files_status_touched", "status", "touched_at"),
        Index("ix_files_lease_expires", "lease_expires_at"),
        Index("ix_files_dispatched", "dispatched_at"),
        # A job's next waiting file, in zip order, without reading the ones already sent.
        Index("ix_files_job_waiting", "job_id", "status", "dispatched_at", "position"),
    )


class Lock(Base):
    """A named lock with an expiry, taken by a conditional UPDATE, so it works alike on SQLite
    and PostgreSQL; one that expired (its holder died) can be taken by the next caller."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(36))
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class Worker(Base):
    """A live worker and its conversion slots (processes), renewed by its heartbeat
    (workers/leases.py). The scheduler sizes its window from the slots of the live ones, so
    adding a worker host widens it without any setting."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery's hostname
    slots: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class Upload(Base):
    """A direct upload that was offered (``POST /api/v1/uploads``) and not yet made a job.

    Its id becomes the job's id, so the object it names is the job's upload object: a job is
    created from it without copying anything. The row goes when the job is created; unused ones
    are removed (with their object) by the sweeper once expired.
    """

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    max_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_uploads_expires", "expires_at"),)


class WebhookDelivery(Base):
    """One callback to make when a job ends, with its attempts; the database is its queue, so a
    restart loses no delivery."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(32))  # job.completed, job.failed, job.cancelled
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, name="delivery_status", native_enum=False, length=16),
        default=DeliveryStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
