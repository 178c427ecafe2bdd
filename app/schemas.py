"""Pydantic models of the API's requests and responses (kept apart from the ORM models)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_serializer

from app.models import FileStatus, JobStatus


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp Quire writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ErrorDetail(BaseModel):
    status: int = Field(examples=[404])
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["No job with id 3f1c... exists."])


class ErrorResponse(BaseModel):
    """The one error shape every endpoint answers with."""

    error: ErrorDetail


class JobCreated(BaseModel):
    job_id: str = Field(examples=["7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"])
    status: JobStatus = Field(examples=[JobStatus.PENDING])
    file_count: int = Field(examples=[1000])
    status_url: str = Field(examples=["http://localhost:8000/api/v1/jobs/7d9f5c1e-..."])


class Progress(BaseModel):
    total: int
    pending: int
    in_progress: int
    completed: int
    failed: int
    percent: float = Field(description="Share of files that reached a final state, 0 to 100.")


class FileResult(BaseModel):
    file_id: str
    filename: str = Field(description="The DOCX entry's path inside the uploaded zip.")
    output_name: str = Field(description="The PDF's path inside the result zip.")
    status: FileStatus
    error_message: str | None = Field(default=None, description="Why the file FAILED.")


class JobStatusResponse(BaseModel):
    job_id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    error_message: str | None = Field(default=None, description="Why the job FAILED.")
    download_url: str | None = Field(
        default=None, description="Absolute URL of the result zip; present once COMPLETED."
    )
    result_bytes: int | None = None
    progress: Progress
    files: list[FileResult]

    @field_serializer("created_at", "updated_at", "completed_at")
    def _utc(self, value: datetime | None) -> datetime | None:
        return _as_utc(value)


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict)
