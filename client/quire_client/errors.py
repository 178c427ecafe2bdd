"""Every exception the client raises on purpose, as one tree: catch ``QuireError`` for all.

::

    QuireError                    anything this package raises on purpose
    ├── InputError                a local path cannot be sent: missing, no document in it, not
    │                             a zip nor a document, or zipping it failed
    ├── TransportError            no answer at all: the server is unreachable, timed out or
    │   │                         dropped the connection (``cause`` is httpx's exception)
    │   ├── ConnectError          nothing accepted the connection
    │   └── Timeout               connecting, sending or reading took too long
    ├── UnexpectedResponse        an answer, but not the Quire API's (a captive portal's or a
    │                             proxy's page answering 200, a document of the wrong shape)
    ├── ApiError                  the API refused: ``status``, ``code`` and ``message`` from its
    │   │                         error body ``{"error": {"status", "code", "message"}}``
    │   ├── ClientError           4xx: the request is wrong; sending it again will not help
    │   │   ├── BadRequest        400, 422
    │   │   ├── Unauthorized      401: no API key, and the server needs one
    │   │   ├── Forbidden         403: the key is not accepted
    │   │   ├── NotFound          404: no such job or file (or it has expired)
    │   │   ├── Conflict          409: not in this state (not finished, already ended, ...)
    │   │   ├── ContentTooLarge   413
    │   │   └── TooManyRequests   429: a quota of the key is full, or too many event streams;
    │   │                         ``retry_after`` seconds, when the server says
    │   └── ServerError           5xx
    │       └── ServiceUnavailable  503: the database, store or broker is out of reach
    ├── EventStreamBroken         the job's event stream is missing or ended before the job did;
    │                             ``Client.wait`` falls back to polling on it
    └── TransferError             the object store refused a presigned upload or download (its
        ├── UploadError           answers are not the API's), a download broke off or was not
        └── DownloadError         what was asked for, or could not be written where asked;
                                  ``status`` is the store's, if it answered

``str()`` of each is one line fit to show a person, e.g. ``404 Not Found: No job with id ...``.
"""

from __future__ import annotations

import contextlib
from http import HTTPStatus

import httpx


class QuireError(Exception):
    """The root: anything the client raises on purpose. ``message`` is one line for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(QuireError):
    """A local path given to ``submit`` cannot be sent."""


class TransportError(QuireError):
    """The request got no answer. ``cause`` is the httpx exception behind it."""

    def __init__(self, message: str, cause: httpx.HTTPError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ConnectError(TransportError):
    """Nothing accepted the connection (wrong URL, server down, DNS)."""


class Timeout(TransportError):
    """Connecting, sending or reading took longer than the client's timeout."""


class UnexpectedResponse(QuireError):
    """An answer that is not the Quire API's: most often a wrong ``server`` URL."""


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ApiError(QuireError):
    """The API answered with an error status and (usually) its standard error body.

    ``status`` is the HTTP status, ``code`` the body's machine-readable code (``not_found``,
    ``conflict``, ...), ``message`` the server's explanation, ``response`` the answer itself.
    Raised as the most precise subclass: see ``api_error``.
    """

    def __init__(
        self, status: int, code: str, message: str, response: httpx.Response | None = None
    ) -> None:
        text = f"{status} {reason(status)}" + (f": {message}" if message else "")
        super().__init__(text)
        self.status = status
        self.code = code
        self.message = message  # the server's own words, without the status in front
        self.response = response

    def __str__(self) -> str:
        return str(self.args[0])


class ClientError(ApiError):
    """4xx: the request itself is wrong; the same request will be refused again."""


class BadRequest(ClientError):
    """400 or 422: a malformed request or upload (the message says what)."""


class Unauthorized(ClientError):
    """401: the server needs an API key and none was sent."""


class Forbidden(ClientError):
    """403: the API key sent is not one the server accepts."""


class NotFound(ClientError):
    """404: no such job, file or archive (never created, deleted, or expired)."""


class Conflict(ClientError):
    """409: the job is not in a state that allows this (not finished, already ended, ...)."""


class ContentTooLarge(ClientError):
    """413: the upload is larger, or holds more files, than the server accepts."""


class TooManyRequests(ClientError):
    """429: a quota of the API key is full (``code`` ``quota_exceeded``: its active jobs or its
    queued files; ``Client.submit`` can wait it out) or too many event streams are open at
    once. ``retry_after``: the seconds the server suggests waiting, if it said."""

    def __init__(
        self, status: int, code: str, message: str, response: httpx.Response | None = None
    ) -> None:
        super().__init__(status, code, message, response)
        self.retry_after: float | None = None
        # Absent, or an HTTP date: the caller chooses its own wait.
        with contextlib.suppress(ValueError):
            if response is not None:
                self.retry_after = float(response.headers.get("retry-after", ""))


class ServerError(ApiError):
    """5xx: the server failed; the same request may well succeed later."""


class ServiceUnavailable(ServerError):
    """503: something the server depends on is out of reach; nothing was done, so the request
    may be sent again (the client does so itself where that is safe)."""


class EventStreamBroken(QuireError):
    """The job's event stream is missing (an old server, a proxy that refuses streams) or
    ended before the job did. Polling ``Client.job`` tells the rest. ``cause`` is the API's
    refusal when the stream was refused (a 404 for an unknown job), else None."""

    def __init__(self, message: str, cause: ApiError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class TransferError(QuireError):
    """A transfer to or from a presigned URL failed, or its bytes could not be used.
    ``status`` is the store's answer, or None when it gave none."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UploadError(TransferError):
    """The direct upload's PUT was refused or broke off."""


class DownloadError(TransferError):
    """A download was refused by the store, broke off, was not what was asked for (not a zip,
    not a PDF), or could not be written where asked."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: ContentTooLarge,
    422: BadRequest,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def api_error(response: httpx.Response) -> ApiError:
    """The ``ApiError`` for an error answer, read from the API's standard error body.

    An answer without that body (a proxy's 502 page) still gives one: its first line of text
    stands for the message, and the code is made from the status as the server makes it.
    """
    code = reason(response.status_code).lower().replace(" ", "_").replace("-", "_")
    message = ""
    try:
        error = response.json()["error"]
        message = str(error["message"])
        code = str(error.get("code") or code)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        message = text.splitlines()[0][:200] if text else ""
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ClientError if status < 500 else ServerError)
    return kind(status, code, message, response)


__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "ConnectError",
    "ContentTooLarge",
    "DownloadError",
    "EventStreamBroken",
    "Forbidden",
    "InputError",
    "NotFound",
    "QuireError",
    "ServerError",
    "ServiceUnavailable",
    "Timeout",
    "TooManyRequests",
    "TransferError",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "UploadError",
    "api_error",
]
