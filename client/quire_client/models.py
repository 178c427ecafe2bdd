"""What the API answers, as typed, read-only objects.

Each keeps the document it was read from in ``raw`` (left out of comparisons and ``repr``):
fields a newer server adds are there before this package knows them, and ``quire status
--json`` prints it as the server sent it. A document of the wrong shape is an
``UnexpectedResponse``, raised by the client, never a ``KeyError`` in your code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """The job has ended: it will not change unless it is retried."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class FileStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


Raw = Mapping[str, Any]


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Progress:
    """A job's files counted by status; ``percent`` of them finished."""

    total: int
    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    percent: float = 0.0
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> int:
        """Files that will not change again: converted, failed or cancelled."""
        return self.completed + self.failed + self.cancelled

    @classmethod
    def parse(cls, data: Raw) -> Progress:
        return cls(
            total=int(data["total"]),
            pending=int(data.get("pending", 0)),
            in_progress=int(data.get("in_progress", 0)),
            completed=int(data.get("completed", 0)),
            failed=int(data.get("failed", 0)),
            cancelled=int(data.get("cancelled", 0)),
            percent=float(data.get("percent", 0.0)),
            raw=data,
        )


@dataclass(frozen=True)
class FileResult:
    """One DOCX of a job: ``filename`` in the upload, ``output_name`` in the result zip."""

    file_id: str
    filename: str
    output_name: str
    status: FileStatus
    error_message: str | None = None
    download_url: str | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw) -> FileResult:
        return cls(
            file_id=str(data["file_id"]),
            filename=str(data["filename"]),
            output_name=str(data.get("output_name") or data["filename"]),
            status=FileStatus(data["status"]),
            error_message=data.get("error_message"),
            download_url=data.get("download_url"),
            raw=data,
        )


@dataclass(frozen=True)
class Job:
    """A job's status document (``GET /api/v1/jobs/{id}``)."""

    job_id: str
    status: JobStatus
    progress: Progress
    files: tuple[FileResult, ...]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    download_url: str | None = None
    result_bytes: int | None = None
    merged_url: str | None = None  # the merged PDF, for a job submitted with merge
    merged_bytes: int | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def failed_files(self) -> list[FileResult]:
        return [file for file in self.files if file.status is FileStatus.FAILED]

    @classmethod
    def parse(cls, data: Raw) -> Job:
        return cls(
            job_id=str(data["job_id"]),
            status=JobStatus(data["status"]),
            progress=Progress.parse(data["progress"]),
            files=tuple(FileResult.parse(file) for file in data.get("files", [])),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            completed_at=_time(data.get("completed_at")),
            error_message=data.get("error_message"),
            download_url=data.get("download_url"),
            result_bytes=data.get("result_bytes"),
            merged_url=data.get("merged_url"),
            merged_bytes=data.get("merged_bytes"),
            raw=data,
        )


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the job exists, its conversion runs in the background.
    ``direct_upload`` says whether the zip went to the object store (True) or through the API."""

    job_id: str
    status: JobStatus
    file_count: int
    status_url: str
    direct_upload: bool = False
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw, direct_upload: bool = False) -> Submitted:
        return cls(
            job_id=str(data["job_id"]),
            status=JobStatus(data["status"]),
            file_count=int(data["file_count"]),
            status_url=str(data["status_url"]),
            direct_upload=direct_upload,
            raw=data,
        )


@dataclass(frozen=True)
class JobSummary:
    """One job of a listing (``GET /api/v1/jobs``): its counts, not its files."""

    job_id: str
    status: JobStatus
    file_count: int
    finished_files: int
    created_at: datetime | None = None
    error_message: str | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw) -> JobSummary:
        return cls(
            job_id=str(data["job_id"]),
            status=JobStatus(data["status"]),
            file_count=int(data["file_count"]),
            finished_files=int(data.get("finished_files", 0)),
            created_at=_time(data.get("created_at")),
            error_message=data.get("error_message"),
            raw=data,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, newest first; ``next_cursor`` asks for the next (None: the last)."""

    jobs: tuple[JobSummary, ...]
    next_cursor: str | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw) -> JobPage:
        return cls(
            jobs=tuple(JobSummary.parse(job) for job in data["jobs"]),
            next_cursor=data.get("next_cursor"),
            raw=data,
        )


@dataclass(frozen=True)
class Retried:
    """``POST .../retry``: the job runs again; ``retried_files`` went back to PENDING."""

    job_id: str
    status: JobStatus
    retried_files: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw) -> Retried:
        return cls(
            job_id=str(data["job_id"]),
            status=JobStatus(data["status"]),
            retried_files=int(data["retried_files"]),
            raw=data,
        )


@dataclass(frozen=True)
class Cancelled:
    """``POST .../cancel``: the job is CANCELLED; ``cancelled_files`` will not be converted."""

    job_id: str
    status: JobStatus
    cancelled_files: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Raw) -> Cancelled:
        return cls(
            job_id=str(data["job_id"]),
            status=JobStatus(data["status"]),
            cancelled_files=int(data["cancelled_files"]),
            raw=data,
        )


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: ``file`` (a file changed state), ``progress`` (the
    counts changed) or ``job`` (the job ended; the last event of the stream)."""

    name: str
    data: Raw

    @property
    def progress(self) -> Progress | None:
        """The counts this event carries, if any (``progress`` and ``job`` events)."""
        counts = self.data if self.name == "progress" else self.data.get("progress")
        return Progress.parse(counts) if isinstance(counts, Mapping) and counts else None
