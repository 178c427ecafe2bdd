"""The errors the services raise, by what went wrong rather than by status code.

``app.api.errors`` answers each kind with one status: NotFound 404, Conflict 409,
InvalidRequest 422, OutOfSpace 507, QuotaExceeded 429 with Retry-After (and IdempotencyConflict,
from ``app.jobs``, 422). The message is written for the client, as the API sends it unchanged.

    ServiceError
    ├── NotFound            JobNotFound, FileNotFound, UploadNotFound, ArchiveGone
    ├── Conflict            UploadAlreadyUsed, NothingUploaded, UploadClosed,
    │                       JobNotRetryable, JobNotCancellable, NotReady
    ├── InvalidRequest      a submission's options (the callback URL's host)
    ├── OutOfSpace          the server's disk is too full to take an upload
    └── QuotaExceeded       a submission past the caller's quota (app.services.quotas)
"""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """What was asked for does not exist, or the caller may not see it (so ids cannot be
    probed, another key's job is not found either)."""


class Conflict(ServiceError):
    """The request is valid, but not in the state the thing it acts on is in now."""


class InvalidRequest(ServiceError):
    """The request's content is refused (beyond what the schemas check)."""


class OutOfSpace(ServiceError):
    """The server cannot store what it would have to; trying later may work."""


class QuotaExceeded(ServiceError):
    """A submission past one of the caller's quotas: trying again in ``retry_after`` seconds
    (an estimate) may work. ``quota`` names it ("active_jobs" or "queued_files"), ``limit``
    is its setting and ``current`` what the caller holds now."""

    def __init__(
        self, message: str, *, quota: str, limit: int, current: int, retry_after: int
    ) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.current = current
        self.retry_after = retry_after


class JobNotFound(NotFound):
    def __init__(self, raw_id: str) -> None:
        super().__init__(
            f"No job with id {raw_id!r} exists (finished jobs are removed after QUIRE_JOB_TTL)."
        )


class FileNotFound(NotFound):
    pass


class UploadNotFound(NotFound):
    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"No upload with id {upload_id!r} exists (unused uploads are removed after they "
            "expire)."
        )


class ArchiveGone(NotFound):
    pass


class UploadAlreadyUsed(Conflict):
    def __init__(self, upload_id: str, job_id: str) -> None:
        super().__init__(f"Upload {upload_id} was already made into job {job_id}.")


class NothingUploaded(Conflict):
    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"Nothing was uploaded for upload {upload_id} yet: PUT the zip to its url first."
        )


class UploadClosed(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "This upload was already made into a job, or it expired: its object can no longer "
            "be replaced. Ask for a new upload (POST /api/v1/uploads)."
        )


class JobNotRetryable(Conflict):
    pass


class JobNotCancellable(Conflict):
    pass


class NotReady(Conflict):
    """A download of what the job or file does not have (yet, or any more)."""
