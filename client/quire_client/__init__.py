"""Quire's Python client: submit DOCX files, follow the conversion, fetch the PDFs.

    from quire_client import Client

    with Client("https://quire.example.com", api_key="...") as quire:
        job = quire.submit("contracts/")          # a folder, a zip, a .docx or a list of them
        done = quire.wait(job.job_id)
        quire.download_to_folder(job.job_id, "pdfs/")

It needs httpx alone (the ``quire`` command adds rich) and imports nothing of the server.
``quire_client.errors`` holds the exceptions, one tree under ``QuireError``;
``quire_client.models`` the typed answers; ``quire_client.testing`` a fake server for tests
(``Client(..., transport=FakeQuire().transport())``). See docs/client.md.
"""

from quire_client.client import DEFAULT_SERVER, Client, JobOptions
from quire_client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectError,
    ContentTooLarge,
    DownloadError,
    EventStreamBroken,
    Forbidden,
    InputError,
    NotFound,
    QuireError,
    ServerError,
    ServiceUnavailable,
    Timeout,
    TooManyRequests,
    TransferError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    UploadError,
)
from quire_client.models import (
    Cancelled,
    Event,
    FileResult,
    FileStatus,
    Job,
    JobPage,
    JobStatus,
    JobSummary,
    Progress,
    Retried,
    Submitted,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SERVER",
    "ApiError",
    "BadRequest",
    "Cancelled",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectError",
    "ContentTooLarge",
    "DownloadError",
    "Event",
    "EventStreamBroken",
    "FileResult",
    "FileStatus",
    "Forbidden",
    "InputError",
    "Job",
    "JobOptions",
    "JobPage",
    "JobStatus",
    "JobSummary",
    "NotFound",
    "Progress",
    "QuireError",
    "Retried",
    "ServerError",
    "ServiceUnavailable",
    "Submitted",
    "Timeout",
    "TooManyRequests",
    "TransferError",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "UploadError",
]
