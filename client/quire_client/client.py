"""``Client``: the Quire API over HTTP, typed, with errors from ``quire_client.errors``.

The network is one injected part: ``Client(server, transport=...)`` takes any
``httpx.BaseTransport``, so tests pass ``httpx.MockTransport(handler)`` and answer every request
themselves, including the presigned transfers.

Calls to the API carry ``Authorization: Bearer <key>`` when a key is given; transfers to a
presigned URL (the direct upload's PUT, a download's redirect) never do: the URL carries its
own signature, and S3 refuses a request that also has an Authorization header.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote, urljoin

import httpx

from quire_client.errors import (
    ConnectError,
    DownloadError,
    EventStreamBroken,
    InputError,
    Timeout,
    TooManyRequests,
    TransportError,
    UnexpectedResponse,
    UploadError,
    api_error,
)
from quire_client.models import (
    Cancelled,
    Event,
    Job,
    JobPage,
    JobStatus,
    JobSummary,
    Progress,
    Retried,
    Submitted,
)
from quire_client.sources import Source, upload_source

DEFAULT_SERVER = "http://127.0.0.1:8000"
CHUNK = 1024 * 1024
# Connecting should be quick; reading may wait while the server lists a large zip after the
# upload, and the event stream is quiet for up to 15 s between heartbeats.
TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=300.0)
RETRY_AFTER_CAP = 30.0  # seconds: a 503's Retry-After is followed up to this
# A submission refused by a quota (429) without a usable Retry-After waits this long.
QUOTA_WAIT = 15.0

Transferred = Callable[[int], None]  # called with the count of bytes just sent or received
# Called before each wait for a quota: the refusal (its message, retry_after) and the seconds
# about to be waited.
QuotaWaiting = Callable[[TooManyRequests, float], None]
T = TypeVar("T")
StrPath = str | os.PathLike[str]

# What a request that may be sent twice is sent again for: a 503 (the server did nothing) and
# a connection dropped before the answer came. Not a refused connection or a timeout: a server
# that is down should be reported at once, not after a round of waits.
_DROPPED: tuple[type[httpx.TransportError], ...] = (httpx.RemoteProtocolError, httpx.ReadError)
_ANY: tuple[type[httpx.TransportError], ...] = (httpx.TransportError,)


@dataclass(frozen=True)
class JobOptions:
    """How a job converts: PDF/A level (``"1b"``, ``"2b"``, ``"3b"``), tagged PDF, whether a
    file with a missing font fails (``strict_fonts``), and the URL the server calls when the
    job ends."""

    pdf_a: str | None = None
    tagged_pdf: bool = False
    callback_url: str | None = None
    strict_fonts: bool = False
    # One PDF of the whole job besides the zip (download_merged), ending with pages that list
    # the failed files unless merge_failure_page is False.
    merge: bool = False
    merge_failure_page: bool = True


def _job_path(job_id: str, suffix: str = "") -> str:
    # One path segment, whatever the id holds ("/", "?", ".."): never another route.
    return f"/api/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _file_chunks(path: Path, sent: Transferred) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk
            sent(len(chunk))


def _ignore(_: int) -> None:
    pass


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _is_pdf(path: Path) -> bool:
    with path.open("rb") as head:
        return head.read(5) == b"%PDF-"


def _member_path(folder: Path, name: str) -> Path:
    """Where the archive's entry ``name`` goes under ``folder``; refuses a name that would
    land elsewhere (absolute, ``..``, a drive), whoever built the archive."""
    parts = PurePosixPath(name).parts
    if (
        not parts
        or name.startswith("/")
        or "\\" in name
        or ":" in parts[0]
        or any(part in ("..", ".") for part in parts)
    ):
        raise DownloadError(f"the archive holds a file named {name!r}, outside its folder")
    return folder.joinpath(*parts)


class Client:
    """A Quire server's API.

    ``server`` is its base URL, ``api_key`` the key it asks for (if any). ``transport``
    replaces the network (``httpx.MockTransport`` in tests); ``retries`` is how many times in
    all a request that is safe to repeat is sent on a 503 or a dropped connection, waiting
    ``retry_delay`` seconds times the attempt (or the server's Retry-After) in between.
    ``sleep`` is how it waits (between those attempts, for a quota, between polls): tests pass
    one that returns at once.

    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        retries: int = 3,
        retry_delay: float = 1.0,
        user_agent: str = "quire-client",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self.sleep = sleep
        headers = {"User-Agent": user_agent}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._api = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, transport=transport
        )
        # No key, no base URL: it only fetches and sends presigned URLs.
        self._transfers = httpx.Client(
            headers={"User-Agent": user_agent}, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()
        self._transfers.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _transport_error(self, request: httpx.Request, exc: httpx.HTTPError) -> TransportError:
        if isinstance(exc, httpx.ConnectError):
            return ConnectError(f"cannot reach the Quire server at {self.server}: {exc}", exc)
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(f"{request.method} {request.url} timed out", exc)
        return TransportError(f"{request.method} {request.url} failed: {exc}", exc)

    def _send(self, client: httpx.Client, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            return client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._transport_error(request, exc) from None

    def _pause(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.retry_delay * attempt
        # No Retry-After, or an HTTP date: our own backoff.
        with contextlib.suppress(ValueError):
            if response is not None:
                delay = min(float(response.headers.get("retry-after", "")), RETRY_AFTER_CAP)
        self.sleep(delay)

    def _request(
        self,
        method: str,
        path: str,
        *,
        stream: bool = False,
        retry_on: tuple[type[httpx.TransportError], ...] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one API request; an error answer raises its ``ApiError``.

        With ``retry_on`` (only for requests whose body can be sent again and whose repeat
        does no harm), a 503 or one of those transport errors sends it again.
        """
        attempts = self.retries if retry_on is not None else 1
        for attempt in range(1, attempts + 1):
            request = self._api.build_request(method, path, **kwargs)
            try:
                response = self._api.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < attempts and retry_on and isinstance(exc, retry_on):
                    self._pause(attempt, None)
                    continue
                raise self._transport_error(request, exc) from None
            except httpx.HTTPError as exc:
                raise self._transport_error(request, exc) from None
            if response.status_code == 503 and attempt < attempts:
                response.close()
                self._pause(attempt, response)
                continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                    response.close()
                raise api_error(response)
            return response
        raise AssertionError("unreachable")

    def _document(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a successful answer. Something else (a captive portal's or a
        proxy's page answering 200) is an UnexpectedResponse, not a traceback."""
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            kind = response.headers.get("content-type", "no content type")
            raise UnexpectedResponse(
                f"{response.request.method} {response.request.url} answered "
                f"{response.status_code} with {kind}, not a Quire answer: is the server URL "
                "the Quire API?"
            )
        return document

    def _read(self, parse: Callable[[dict[str, Any]], T], response: httpx.Response) -> T:
        document = self._document(response)
        try:
            return parse(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(
                f"{response.request.method} {response.request.url} answered a document this "
                f"client cannot read ({type(exc).__name__}: {exc})"
            ) from None

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        source: Source,
        options: JobOptions | None = None,
        *,
        sent: Transferred | None = None,
        quota_wait: float = 0.0,
        on_quota_wait: QuotaWaiting | None = None,
    ) -> Submitted:
        """Create a job from a folder (its .docx files, with their relative paths), a zip, one
        .docx, or a list of .docx files. Returns once the server has accepted it (202); the
        conversion runs in the background: follow it with ``wait`` or ``events``.

        ``sent`` is called with each count of bytes uploaded. Raises ``InputError`` if there
        is nothing to send. ``quota_wait`` and ``on_quota_wait``: see ``submit_zip``.
        """
        with upload_source(source) as (archive, _):
            return self.submit_zip(
                archive, options, sent=sent, quota_wait=quota_wait, on_quota_wait=on_quota_wait
            )

    def submit_zip(
        self,
        archive: StrPath,
        options: JobOptions | None = None,
        *,
        sent: Transferred | None = None,
        quota_wait: float = 0.0,
        on_quota_wait: QuotaWaiting | None = None,
    ) -> Submitted:
        """Upload the zip ``archive`` and create its job: by direct upload to the object store
        when the server offers it, else as one multipart request through the API.

        A server whose quota for this key is full answers 429 (``TooManyRequests``). With
        ``quota_wait`` seconds, the submission is sent again after each refusal's Retry-After
        (``QUOTA_WAIT`` without one), until it is accepted or that many seconds were waited in
        all; ``on_quota_wait(refusal, seconds)`` is called before each wait (to show it). A
        direct upload is PUT once: only the job's creation is sent again."""
        archive = Path(archive)
        options = options or JobOptions()
        sent = sent or _ignore
        size = archive.stat().st_size
        offer = self._upload_offer(size)
        if offer is None:
            return self._until_quota_allows(
                lambda: self._submit_multipart(archive, size, options, sent),
                quota_wait,
                on_quota_wait,
            )
        self._put(offer, archive, size, sent)
        body = {
            "upload_id": offer["upload_id"],
            "pdf_a": options.pdf_a,
            "tagged_pdf": options.tagged_pdf,
            **({"callback_url": options.callback_url} if options.callback_url else {}),
            **({"strict_fonts": True} if options.strict_fonts else {}),
            **({"merge": True} if options.merge else {}),
            **({} if options.merge_failure_page else {"merge_failure_page": False}),
        }
        # After a possibly long upload, a network blip must not lose it: the request is cheap
        # to send again, and its Idempotency-Key makes the server answer a repeat with the same
        # job instead of a second one. So any transport error is worth another attempt here.
        headers = {"Idempotency-Key": str(uuid.uuid4())}

        def create() -> Submitted:
            response = self._request(
                "POST", "/api/v1/jobs", json=body, headers=headers, retry_on=_ANY
            )
            return self._read(
                lambda document: Submitted.parse(document, direct_upload=True), response
            )

        return self._until_quota_allows(create, quota_wait, on_quota_wait)

    def _until_quota_allows(
        self, send: Callable[[], T], quota_wait: float, on_quota_wait: QuotaWaiting | None
    ) -> T:
        """``send()``, sent again after each 429 while less than ``quota_wait`` seconds were
        waited; the last refusal is raised once the budget is spent."""
        waited = 0.0
        while True:
            try:
                return send()
            except TooManyRequests as refusal:
                suggested = refusal.retry_after
                delay = suggested if suggested is not None and suggested > 0 else QUOTA_WAIT
                delay = min(delay, quota_wait - waited)
                if delay <= 0:
                    raise
                if on_quota_wait is not None:
                    on_quota_wait(refusal, delay)
                self.sleep(delay)
                waited += delay

    def _upload_offer(self, size: int) -> dict[str, Any] | None:
        request = self._api.build_request("POST", "/api/v1/uploads", json={"size": size})
        response = self._send(self._api, request, stream=False)
        # A server without direct uploads has no such route: send the zip the classic way.
        if response.status_code in (404, 405):
            return None
        if response.status_code >= 400:
            raise api_error(response)
        offer = self._document(response)
        limit = offer.get("max_bytes")
        if isinstance(limit, int) and size > limit:
            raise InputError(f"the zip is {size} bytes; the server accepts at most {limit}")
        if not isinstance(offer.get("upload_id"), str) or not isinstance(offer.get("url"), str):
            raise UnexpectedResponse("POST /api/v1/uploads answered without upload_id and url")
        return offer

    def _put(self, offer: dict[str, Any], archive: Path, size: int, sent: Transferred) -> None:
        headers = {**offer.get("headers", {}), "Content-Length": str(size)}
        request = self._transfers.build_request(
            offer.get("method", "PUT"),
            urljoin(self.server + "/", offer["url"]),
            headers=headers,
            content=_file_chunks(archive, sent),
        )
        response = self._send(self._transfers, request, stream=False)
        if response.status_code >= 400:
            raise UploadError(
                f"the upload was refused: {api_error(response)}", response.status_code
            )

    def _submit_multipart(
        self, archive: Path, size: int, options: JobOptions, sent: Transferred
    ) -> Submitted:
        # Built by hand rather than with httpx's files=: the body is streamed from the file
        # with its length known in advance (the server can refuse an oversized upload before
        # it is sent), and each chunk is reported to ``sent``.
        boundary = uuid.uuid4().hex
        fields: dict[str, str] = {}
        if options.pdf_a:
            fields["pdf_a"] = options.pdf_a
        if options.tagged_pdf:
            fields["tagged_pdf"] = "true"
        if options.strict_fonts:
            fields["strict_fonts"] = "true"
        if options.merge:
            fields["merge"] = "true"
        if not options.merge_failure_page:
            fields["merge_failure_page"] = "false"
        if options.callback_url:
            fields["callback_url"] = options.callback_url
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in fields.items()
        )
        filename = json.dumps(archive.name)  # quoted and escaped
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename={filename}'
            "\r\nContent-Type: application/zip\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            yield from _file_chunks(archive, sent)
            yield tail

        # Not sent again on failure: the body is a stream read once, and without a key a
        # repeat could make a second job.
        response = self._request(
            "POST",
            "/api/v1/jobs",
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
        )
        return self._read(Submitted.parse, response)

    # -- following -----------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """The job's status document: its status, progress and each file's result."""
        return self._read(Job.parse, self._request("GET", _job_path(job_id), retry_on=_DROPPED))

    def events(self, job_id: str) -> Iterator[Event]:
        """The job's server-sent events, as they come, until the job ends (the ``job`` event
        is the last). ``EventStreamBroken`` if the stream is refused or stops before that; an
        API refusal (404 for an unknown job) is its ``cause``."""
        request = self._api.build_request("GET", _job_path(job_id, "/events"))
        try:
            response = self._api.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise EventStreamBroken(str(exc)) from None
        try:
            if response.status_code >= 400:
                # No stream on this server, or a proxy refused it: polling the status tells
                # the rest (and reports a real error, such as an unknown job, by its own).
                response.read()
                raise EventStreamBroken(
                    f"the event stream answered {response.status_code}", api_error(response)
                )
            name, data = "message", ""
            for line in response.iter_lines():
                if not line:
                    if data:
                        document = json.loads(data)
                        if not isinstance(document, dict):
                            raise ValueError(f"an event's data is not an object: {data[:80]}")
                        yield Event(name, document)
                        if name == "job":
                            return
                    name, data = "message", ""
                elif line.startswith(":"):
                    continue  # a heartbeat
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
        except (httpx.HTTPError, ValueError) as exc:
            raise EventStreamBroken(str(exc)) from None
        finally:
            response.close()
        raise EventStreamBroken("the event stream ended before the job did")

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_stream_broken: Callable[[EventStreamBroken], None] | None = None,
        poll_interval: float = 1.0,
    ) -> Job:
        """Block until the job has ended; returns its final status document.

        Follows the event stream, calling ``on_progress`` with each new count; if the stream
        is missing or breaks, says so to ``on_stream_broken`` and polls the status every
        ``poll_interval`` seconds instead.
        """
        report = on_progress or (lambda _: None)
        try:
            for event in self.events(job_id):
                counts = event.progress
                if counts is not None:
                    report(counts)
                if event.name == "job":
                    break
        except EventStreamBroken as broken:
            if on_stream_broken is not None:
                on_stream_broken(broken)
            while True:
                job = self.job(job_id)
                report(job.progress)
                if job.status.finished:
                    return job
                self.sleep(poll_interval)
        return self.job(job_id)

    # -- results -------------------------------------------------------------------------------

    def download(self, job_id: str, target: StrPath, *, received: Transferred | None = None) -> int:
        """Save a finished job's zip of PDFs to ``target``; returns the bytes written.

        Written to a hidden file beside ``target`` and renamed into place once complete and
        readable as a zip, so ``target`` is never a half-written archive. ``Conflict`` if the
        job has no archive (not finished, failed or cancelled).
        """
        return self._fetch(_job_path(job_id, "/download"), Path(target), "archive", received)

    def download_file(
        self, job_id: str, file_id: str, target: StrPath, *, received: Transferred | None = None
    ) -> int:
        """Save one converted file's PDF to ``target``; returns the bytes written. ``Conflict``
        if that file failed or is not converted yet."""
        path = _job_path(job_id, f"/files/{quote(file_id, safe='')}")
        return self._fetch(path, Path(target), "PDF", received)

    def download_merged(
        self, job_id: str, target: StrPath, *, received: Transferred | None = None
    ) -> int:
        """Save the job's merged PDF (submitted with ``merge``) to ``target``; returns the
        bytes written. ``Conflict`` if the job has no merge or it is not ready yet."""
        return self._fetch(_job_path(job_id, "/merged"), Path(target), "merged PDF", received)

    def download_to_folder(
        self, job_id: str, folder: StrPath, *, received: Transferred | None = None
    ) -> list[Path]:
        """Save a finished job's PDFs under ``folder``, each at its path in the archive (the
        upload's folders, ``.docx`` made ``.pdf``); returns the paths written.

        The archive is fetched into a hidden folder inside ``folder`` (the same disk) and
        removed once its PDFs are in place; a PDF already there under the same name is
        replaced, other files are left alone.
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot make the folder {folder}: {exc}") from None
        with tempfile.TemporaryDirectory(dir=folder, prefix=".quire-") as scratch:
            archive = Path(scratch, "result.zip")
            self.download(job_id, archive, received=received)
            return self._extract(archive, folder)

    @staticmethod
    def _extract(archive: Path, folder: Path) -> list[Path]:
        written: list[Path] = []
        try:
            with zipfile.ZipFile(archive) as pdfs:
                members = [info for info in pdfs.infolist() if not info.is_dir()]
                targets = [_member_path(folder, info.filename) for info in members]
                for info, target in zip(members, targets, strict=True):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_name(f".{target.name}.part")
                    try:
                        with pdfs.open(info) as source, partial.open("wb") as sink:
                            shutil.copyfileobj(source, sink, CHUNK)
                        os.replace(partial, target)
                    finally:
                        partial.unlink(missing_ok=True)
                    written.append(target)
        except (OSError, zipfile.BadZipFile) as exc:
            raise DownloadError(f"cannot write the PDFs into {folder}: {exc}") from None
        return written

    def _fetch(self, path: str, target: Path, what: str, received: Transferred | None) -> int:
        received = received or _ignore
        check = _is_zip if what == "archive" else _is_pdf
        response = self._request("GET", path, stream=True, retry_on=_DROPPED)
        if response.is_redirect:
            response.close()
            location = urljoin(str(response.url), response.headers["location"])
            request = self._transfers.build_request("GET", location)
            response = self._send(self._transfers, request, stream=True)
            if response.status_code >= 400:
                response.read()
                response.close()
                raise DownloadError(
                    f"the {what} could not be downloaded: {api_error(response)}",
                    response.status_code,
                )
        partial = target.with_name(f".{target.name}.part")
        written = 0
        try:
            with partial.open("wb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    written += len(chunk)
                    received(len(chunk))
            if not check(partial):
                article = "an" if what[0] in "aeiou" else "a"
                raise DownloadError(f"the server sent something that is not {article} {what}")
            os.replace(partial, target)
        except httpx.HTTPError as exc:
            raise DownloadError(f"the download broke off: {exc}") from None
        except OSError as exc:
            raise DownloadError(f"cannot write {target}: {exc}") from None
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return written

    # -- managing ------------------------------------------------------------------------------

    def jobs(
        self, *, status: JobStatus | str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """One page of your jobs, newest first (``limit`` 1 to 200)."""
        params: dict[str, str | int] = {"limit": limit}
        if status is not None:
            params["status"] = str(status)
        if cursor is not None:
            params["cursor"] = cursor
        response = self._request("GET", "/api/v1/jobs", params=params, retry_on=_DROPPED)
        return self._read(JobPage.parse, response)

    def iter_jobs(self, *, status: JobStatus | str | None = None) -> Iterator[JobSummary]:
        """Every one of your jobs, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.jobs(status=status, limit=200, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def retry(self, job_id: str) -> Retried:
        """Convert a finished job's failed and cancelled files again (``Conflict`` if it is
        still running or nothing failed). Follow the new round with ``wait``."""
        return self._read(Retried.parse, self._request("POST", _job_path(job_id, "/retry")))

    def cancel(self, job_id: str) -> Cancelled:
        """Stop a job that has not ended (``Conflict`` once it has); converted files stay."""
        return self._read(Cancelled.parse, self._request("POST", _job_path(job_id, "/cancel")))

    def delete(self, job_id: str) -> None:
        """Remove the job, its files and results; it is ``NotFound`` afterwards. A running
        job is cancelled first. Sent again on a 503, as the API asks."""
        self._request("DELETE", _job_path(job_id), retry_on=_DROPPED)


__all__ = ["DEFAULT_SERVER", "TIMEOUT", "Client", "JobOptions"]
