"""The CLI's HTTP side: one small client over the Quire API, with errors as one-line messages.

Calls to the API carry ``Authorization: Bearer <key>`` when a key is given; transfers to a
presigned URL (the direct upload's PUT, the archive's download) never do: the URL carries its
own signature, and S3 refuses a request that also has an Authorization header.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from app.cli.errors import CliError

CHUNK = 1024 * 1024
Progress = Callable[[int], None]  # called with the count of bytes just sent or received
# Connecting should be quick; reading may wait while the server lists a large zip after the
# upload, and the event stream is quiet for up to 15 s between heartbeats.
TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=300.0)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
SUBMIT_ATTEMPTS = 3  # for creating the job from a direct upload


class StreamBroken(Exception):
    """The event stream is missing or ended before the job did: poll instead."""


@dataclass(frozen=True)
class JobOptions:
    pdf_a: str | None = None
    tagged_pdf: bool = False


def error_message(response: httpx.Response) -> str:
    """``"413 Content Too Large: <the server's message>"`` from the standard error body."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    text = f"{response.status_code} {response.reason_phrase}"
    if message:
        text += f": {message}"
    if response.status_code in (401, 403):
        text += " (give the key with --api-key or QUIRE_API_KEY)"
    return text


def _document(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer. Something else (a captive portal's or a proxy's
    page answering 200) is a one-line error, not a traceback."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        kind = response.headers.get("content-type", "no content type")
        raise CliError(
            f"{response.request.method} {response.request.url} answered {response.status_code} "
            f"with {kind}, not a Quire answer: is --server the Quire API?"
        )
    return document


def _job_path(job_id: str, suffix: str = "") -> str:
    # One path segment, whatever the id holds ("/", "?", ".."): never another route.
    return f"/api/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _file_chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk
            progress(len(chunk))


class QuireClient:
    def __init__(self, server: str, api_key: str | None = None) -> None:
        self.server = server.rstrip("/")
        headers = {"User-Agent": "quire-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.api = httpx.Client(base_url=self.server, headers=headers, timeout=TIMEOUT)
        self.transfers = httpx.Client(headers={"User-Agent": "quire-cli"}, timeout=TIMEOUT)
        self.direct_upload: bool | None = None  # how the last submit sent its zip

    def __enter__(self) -> QuireClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.api.close()
        self.transfers.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _failure(self, request: httpx.Request, exc: httpx.HTTPError) -> CliError:
        if isinstance(exc, httpx.ConnectError):
            return CliError(f"cannot reach the Quire server at {self.server}: {exc}")
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"{request.method} {request.url} timed out")
        return CliError(f"{request.method} {request.url} failed: {exc}")

    def _send(self, client: httpx.Client, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            return client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._failure(request, exc) from None

    def _api(self, method: str, path: str, stream: bool = False, **kwargs: Any) -> httpx.Response:
        response = self._send(self.api, self.api.build_request(method, path, **kwargs), stream)
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise CliError(error_message(response))
        return response

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> dict[str, Any]:
        return _document(self._api("GET", _job_path(job_id)))

    def submit(self, archive: Path, options: JobOptions, sent: Progress) -> dict[str, Any]:
        """Upload ``archive`` and create its job: by direct upload when the server offers it,
        else as one multipart request. Returns the server's 202 answer."""
        size = archive.stat().st_size
        offer = self._upload_offer(size)
        self.direct_upload = offer is not None
        if offer is None:
            return self._submit_multipart(archive, size, options, sent)
        self._put(offer, archive, size, sent)
        body = {
            "upload_id": offer["upload_id"],
            "pdf_a": options.pdf_a,
            "tagged_pdf": options.tagged_pdf,
        }
        # After a possibly long upload, a network blip must not lose it: the request is cheap
        # to send again, and its Idempotency-Key makes the server answer a repeat with the same
        # job instead of a second one.
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            request = self.api.build_request("POST", "/api/v1/jobs", json=body, headers=headers)
            try:
                response = self.api.send(request)
            except httpx.TransportError as exc:
                if attempt == SUBMIT_ATTEMPTS:
                    raise self._failure(request, exc) from None
                time.sleep(attempt)
                continue
            if response.status_code == 503 and attempt < SUBMIT_ATTEMPTS:
                time.sleep(attempt)
                continue
            if response.status_code >= 400:
                raise CliError(error_message(response))
            return _document(response)
        raise AssertionError("unreachable")

    def _upload_offer(self, size: int) -> dict[str, Any] | None:
        request = self.api.build_request("POST", "/api/v1/uploads", json={"size": size})
        response = self._send(self.api, request, stream=False)
        # A server without direct uploads has no such route: send the zip the classic way.
        if response.status_code in (404, 405):
            return None
        if response.status_code >= 400:
            raise CliError(error_message(response))
        offer = _document(response)
        limit = offer.get("max_bytes")
        if isinstance(limit, int) and size > limit:
            raise CliError(f"the zip is {size} bytes; the server accepts at most {limit}")
        return offer

    def _put(self, offer: dict[str, Any], archive: Path, size: int, sent: Progress) -> None:
        headers = {**offer.get("headers", {}), "Content-Length": str(size)}
        request = self.transfers.build_request(
            offer.get("method", "PUT"),
            urljoin(self.server + "/", offer["url"]),
            headers=headers,
            content=_file_chunks(archive, sent),
        )
        response = self._send(self.transfers, request, stream=False)
        if response.status_code >= 400:
            raise CliError(f"the upload was refused: {error_message(response)}")

    def _submit_multipart(
        self, archive: Path, size: int, options: JobOptions, sent: Progress
    ) -> dict[str, Any]:
        # Built by hand rather than with httpx's files=: the body is streamed from the file
        # with its length known in advance (the server can refuse an oversized upload before
        # it is sent), and each chunk moves the progress bar.
        boundary = uuid.uuid4().hex
        fields: dict[str, str] = {}
        if options.pdf_a:
            fields["pdf_a"] = options.pdf_a
        if options.tagged_pdf:
            fields["tagged_pdf"] = "true"
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

        response = self._api(
            "POST",
            "/api/v1/jobs",
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
        )
        return _document(response)

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as (name, data); StreamBroken if they stop early."""
        request = self.api.build_request("GET", _job_path(job_id, "/events"))
        try:
            response = self.api.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise StreamBroken(str(exc)) from None
        try:
            if response.status_code >= 400:
                # No stream on this server, or it refused: polling the status tells the rest
                # (and reports a real error, such as an unknown job, by its own message).
                raise StreamBroken(f"the event stream answered {response.status_code}")
            name, data = "message", ""
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield name, json.loads(data)
                    name, data = "message", ""
                elif line.startswith(":"):
                    continue  # a heartbeat
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
        except (httpx.HTTPError, ValueError) as exc:
            raise StreamBroken(str(exc)) from None
        finally:
            response.close()
        raise StreamBroken("the event stream ended before the job did")

    def download(self, job_id: str, target: Path, received: Progress) -> int:
        """Save the job's archive to ``target``; returns the bytes written.

        Written to a hidden file beside ``target`` and renamed into place once complete and
        readable as a zip, so ``target`` is never a half-written archive.
        """
        response = self._api("GET", _job_path(job_id, "/download"), stream=True)
        if response.is_redirect:
            response.close()
            location = urljoin(str(response.url), response.headers["location"])
            request = self.transfers.build_request("GET", location)
            response = self._send(self.transfers, request, stream=True)
            if response.status_code >= 400:
                response.read()
                response.close()
                raise CliError(f"the archive could not be downloaded: {error_message(response)}")
        partial = target.with_name(f".{target.name}.part")
        written = 0
        try:
            with partial.open("wb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    written += len(chunk)
                    received(len(chunk))
            if not zipfile.is_zipfile(partial):
                raise CliError("the server sent something that is not a zip")
            os.replace(partial, target)
        except httpx.HTTPError as exc:
            raise CliError(f"the download broke off: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc}") from None
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return written
