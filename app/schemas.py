"""Pydantic models of the API's requests and responses (kept apart from the ORM models)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator
from pydantic.config import JsonDict

from app.models import DeliveryStatus, FileStatus, JobStatus, PdfA


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


class SubmissionOptions(BaseModel):
    """The job's options, as form fields beside a multipart upload or in the JSON body."""

    model_config = ConfigDict(extra="forbid")

    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="An http(s) URL Quire POSTs the job's status document to when it ends.",
        examples=["https://example.com/hooks/quire"],
    )
    pdf_a: PdfA | None = Field(default=None, description="PDF/A level: 1b, 2b or 3b.")
    tagged_pdf: bool = Field(default=False, description="Write tagged (accessible) PDF.")
    strict_fonts: bool = Field(
        default=False,
        description="Fail a file whose document asks for a font that is not installed and "
        "that nothing suitable replaced (its font report's `missing`), naming the fonts.",
        examples=[True],
    )
    merge: bool = Field(
        default=False,
        description="Also write one PDF of the whole job, in upload order, with one bookmark "
        "per file (GET /api/v1/jobs/{id}/merged).",
        examples=[True],
    )
    merge_failure_page: bool = Field(
        default=True,
        description="With merge: end the merged PDF with pages listing the files that could "
        "not be converted, and why.",
        examples=[False],
    )

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Control characters first: urlsplit drops tabs and newlines silently, PostgreSQL
        # cannot store a NUL (a 500), and the webhook's HTTP client would refuse them later.
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise ValueError("must not contain control characters")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http or https URL")
        if any(char.isspace() for char in parts.hostname):
            raise ValueError("must not have spaces in its host name")
        return value


class JobSubmission(SubmissionOptions):
    """``POST /api/v1/jobs`` as JSON: a job from a direct upload."""

    upload_id: str = Field(
        max_length=64,
        description="The id POST /api/v1/uploads answered with, after the PUT succeeded.",
    )

    @field_validator("upload_id")
    @classmethod
    def _canonical(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("is not an upload id") from None


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int | None = Field(
        default=None, ge=1, description="The zip's size in bytes, if known: refused early if over."
    )


class UploadOffer(BaseModel):
    """Where to PUT the zip's bytes: straight into the object store."""

    upload_id: str = Field(examples=["2c0d1e3a-9f7b-4c55-8a61-0b1e2f3a4b5c"])
    method: str = Field(default="PUT", examples=["PUT"])
    url: str = Field(description="Presigned, expiring URL; send the bytes as the request body.")
    headers: dict[str, str] = Field(
        description="Headers the PUT must carry exactly (they are part of the signature).",
        examples=[{"Content-Type": "application/zip"}],
    )
    expires_at: datetime
    max_bytes: int = Field(description="The largest zip the job will accept.")

    @field_serializer("expires_at")
    def _utc(self, value: datetime) -> datetime | None:
        return _as_utc(value)


class JobCreated(BaseModel):
    job_id: str = Field(examples=["7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"])
    status: JobStatus = Field(examples=[JobStatus.PENDING])
    file_count: int = Field(examples=[1000])
    status_url: str = Field(examples=["http://localhost:8000/api/v1/jobs/7d9f5c1e-..."])


class JobOptions(BaseModel):
    """How the job's PDFs are written, chosen at submission."""

    pdf_a: PdfA | None = Field(
        default=None, description="PDF/A conformance level (1b, 2b or 3b); null for plain PDF."
    )
    tagged_pdf: bool = Field(
        default=False, description="Write a tagged (structured, accessible) PDF."
    )
    strict_fonts: bool = Field(
        default=False,
        description="A file with a missing font fails, naming the fonts.",
        examples=[False],
    )
    merge: bool = Field(
        default=False, description="One merged PDF of the whole job is written besides the zip."
    )
    merge_failure_page: bool = Field(
        default=True, description="The merged PDF ends with pages listing the failed files."
    )


class FontSubstitution(BaseModel):
    used: str = Field(description="The font drawn in its place.", examples=["Carlito"])
    metric_compatible: bool = Field(
        description="The replacement has the same metrics (fontconfig's metric aliases): the "
        "layout, line breaks and page count hold.",
        examples=[True],
    )


class FontReport(BaseModel):
    """Which fonts the document asks for were not installed (README, "Fonts")."""

    substituted: dict[str, FontSubstitution] = Field(
        default_factory=dict,
        description="Each requested font that is not installed, and the one used instead.",
        examples=[{"Calibri": {"used": "Carlito", "metric_compatible": True}}],
    )
    missing: list[str] = Field(
        default_factory=list,
        description="Requested fonts for which nothing suitable was found: a generic fallback "
        "was drawn instead.",
        examples=[["Brand Sans"]],
    )


class FontCounts(BaseModel):
    files_with_substitutions: int = Field(
        default=0,
        description="COMPLETED files whose font report has a substitution.",
        examples=[12],
    )
    files_with_missing_fonts: int = Field(
        default=0,
        description="COMPLETED files whose font report has a missing font.",
        examples=[1],
    )


class Progress(BaseModel):
    total: int
    pending: int
    in_progress: int
    completed: int
    failed: int
    cancelled: int = 0
    percent: float = Field(
        description="Share of files that reached a final state (converted, failed or "
        "cancelled), 0 to 100."
    )


class FileResult(BaseModel):
    file_id: str
    filename: str = Field(description="The DOCX entry's path inside the uploaded zip.")
    output_name: str = Field(description="The PDF's path inside the result zip.")
    status: FileStatus
    error_message: str | None = Field(default=None, description="Why the file FAILED.")
    fonts: FontReport | None = Field(
        default=None,
        description="The font report of a COMPLETED file; null until then.",
        examples=[
            {
                "substituted": {"Calibri": {"used": "Carlito", "metric_compatible": True}},
                "missing": ["Brand Sans"],
            }
        ],
    )
    download_url: str | None = Field(
        default=None,
        description="Presigned, expiring URL of this file's PDF; present once COMPLETED.",
    )


class WebhookStatus(BaseModel):
    """The job's callback: the latest delivery to its callback_url and its attempts so far."""

    url: str
    event: str = Field(
        examples=["job.completed"], description="job.completed, job.failed or job.cancelled."
    )
    status: DeliveryStatus = Field(
        description="PENDING (being tried), DELIVERED (answered 2xx) or FAILED (gave up)."
    )
    attempts: int = Field(description="Attempts made so far (QUIRE_WEBHOOK_MAX_ATTEMPTS at most).")
    # Only the class of an answer is shown ("HTTP 5xx", "connection failed", "timed out"): the
    # exact status, the error text and a redirect's Location would let a client probe what
    # the worker can reach. The details are in the worker's log (webhook.retry/failed).
    last_error: str | None = Field(
        default=None,
        description='Why the last attempt failed, in general terms: "HTTP 5xx", "HTTP 4xx", '
        '"HTTP 3xx: redirects are not followed", "connection failed", "timed out", or why '
        "it was not sent.",
    )
    next_attempt_at: datetime | None = Field(
        default=None, description="When the next attempt is due, while PENDING."
    )
    delivered_at: datetime | None = None

    @field_serializer("next_attempt_at", "delivered_at")
    def _utc(self, value: datetime | None) -> datetime | None:
        return _as_utc(value)


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
    merged_url: str | None = Field(
        default=None,
        description="Absolute URL of the merged PDF (option merge); present once the job is "
        "COMPLETED with it.",
        examples=["http://127.0.0.1:8000/api/v1/jobs/7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a/merged"],
    )
    merged_bytes: int | None = Field(
        default=None, description="The merged PDF's size in bytes.", examples=[38112]
    )
    options: JobOptions = Field(default_factory=JobOptions)
    webhook: WebhookStatus | None = Field(
        default=None, description="The callback to the job's callback_url; null without one."
    )
    progress: Progress
    fonts: FontCounts = Field(
        default_factory=FontCounts,
        description="How many of the job's converted files had a font replaced, or missing.",
        examples=[{"files_with_substitutions": 12, "files_with_missing_fonts": 1}],
    )
    files_ahead: int = Field(
        default=0,
        ge=0,
        description="An estimate of the conversions that start before this job's first one: "
        "while none of its files has started, the conversions of other jobs in flight "
        "(sent to the workers and not finished), which the scheduler started before any "
        "waiting file; 0 once a file of this job is in flight or finished, and for an ended "
        "job.",
    )
    estimated_start: datetime | None = Field(
        default=None,
        description="When this job's first conversion should start, estimated from "
        "files_ahead and the service's rate over the last minute; null when files_ahead is "
        "0 or no file finished in the last minute.",
    )
    files: list[FileResult]

    @field_serializer("created_at", "updated_at", "completed_at", "estimated_start")
    def _utc(self, value: datetime | None) -> datetime | None:
        return _as_utc(value)


class JobSummary(BaseModel):
    """A job without its files, as listed by ``GET /api/v1/jobs``."""

    job_id: str
    status: JobStatus
    file_count: int
    finished_files: int = Field(description="Files that were converted or failed so far.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    error_message: str | None = None
    options: JobOptions
    status_url: str

    @field_serializer("created_at", "updated_at", "completed_at")
    def _utc(self, value: datetime | None) -> datetime | None:
        return _as_utc(value)


SUMMARY_EXAMPLE: JsonDict = {
    "job_id": "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a",
    "status": "COMPLETED",
    "file_count": 1000,
    "finished_files": 1000,
    "created_at": "2026-11-30T03:25:31.086479Z",
    "updated_at": "2026-11-30T03:26:02.572975Z",
    "completed_at": "2026-11-30T03:26:02.572974Z",
    "error_message": None,
    "options": {
        "pdf_a": None,
        "tagged_pdf": False,
        "strict_fonts": False,
        "merge": False,
        "merge_failure_page": True,
    },
    "status_url": "http://127.0.0.1:8000/api/v1/jobs/7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a",
}


class JobList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"jobs": [SUMMARY_EXAMPLE], "next_cursor": "MjAyNi0xMS0zMFQwMzoy..."}]
        }
    )

    jobs: list[JobSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict)
