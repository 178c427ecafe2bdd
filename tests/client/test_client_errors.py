"""The client's error paths, with the network replaced by ``httpx.MockTransport``: each refusal
the API can give is its own ``ApiError`` subclass, a 503 is sent again where that is safe, a
broken event stream falls back to polling, and a failed download leaves nothing behind.

The happy path runs against the real service (tests/e2e/test_client.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quire_client import (
    ApiError,
    BadRequest,
    Client,
    ClientError,
    Conflict,
    ConnectError,
    ContentTooLarge,
    DownloadError,
    EventStreamBroken,
    Forbidden,
    InputError,
    JobStatus,
    NotFound,
    QuireError,
    ServerError,
    ServiceUnavailable,
    Timeout,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    UploadError,
)
from tests.docx_factory import make_docx

SERVER = "http://quire.test"
JOB = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, message: str, code: str = "some_code", **headers: str) -> httpx.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


def job_document(status: str = "COMPLETED", **counts: int) -> dict[str, Any]:
    progress = {"total": 2, "pending": 0, "in_progress": 0, "completed": 2, "failed": 0}
    progress |= counts
    return {
        "job_id": JOB,
        "status": status,
        "created_at": "2026-12-06T05:00:00Z",
        "updated_at": "2026-12-06T05:00:01Z",
        "progress": progress,
        "files": [
            {
                "file_id": "f1",
                "filename": "a.docx",
                "output_name": "a.pdf",
                "status": "COMPLETED",
            },
            {
                "file_id": "f2",
                "filename": "sub/b.docx",
                "output_name": "sub/b.pdf",
                "status": "COMPLETED",
            },
        ],
    }


class Recorder:
    """A MockTransport handler that records each request and answers from ``answer``."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.raw_path.decode()}" for r in self.requests]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], tuple[Client, Recorder]]]:
    clients: list[Client] = []

    def make(answer: Handler) -> tuple[Client, Recorder]:
        recorder = Recorder(answer)
        client = Client(SERVER, "key-1", transport=httpx.MockTransport(recorder), retry_delay=0.0)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize(
    ("status", "kind", "family"),
    [
        (400, BadRequest, ClientError),
        (401, Unauthorized, ClientError),
        (403, Forbidden, ClientError),
        (404, NotFound, ClientError),
        (409, Conflict, ClientError),
        (413, ContentTooLarge, ClientError),
        (422, BadRequest, ClientError),
        (429, TooManyRequests, ClientError),
        (418, ClientError, ClientError),
        (500, ServerError, ServerError),
        (503, ServiceUnavailable, ServerError),
    ],
)
def test_each_refusal_is_its_api_error_with_the_bodys_fields(
    serve: Callable[[Handler], tuple[Client, Recorder]],
    status: int,
    kind: type[ApiError],
    family: type[ApiError],
) -> None:
    client, recorder = serve(lambda _: error(status, "Said the server.", "its_code"))
    with pytest.raises(kind) as raised:
        client.job(JOB)
    problem = raised.value
    assert isinstance(problem, family) and isinstance(problem, QuireError)
    assert (problem.status, problem.code, problem.message) == (
        status,
        "its_code",
        "Said the server.",
    )
    assert str(problem).startswith(f"{status} ") and str(problem).endswith(": Said the server.")
    # The key rode along to the API; the id was one path segment.
    assert recorder.requests[0].headers["authorization"] == "Bearer key-1"
    if status == 503:
        assert len(recorder.requests) == 3, "a GET is sent again on a 503, three times in all"
    else:
        assert len(recorder.requests) == 1, "a refusal is not sent again"


def test_a_429_carries_its_retry_after(serve: Callable[[Handler], tuple[Client, Recorder]]) -> None:
    client, _ = serve(lambda _: error(429, "Too many streams.", **{"Retry-After": "5"}))
    with pytest.raises(TooManyRequests) as raised:
        client.cancel(JOB)
    assert raised.value.retry_after == 5.0


def test_an_answer_without_the_error_body_still_says_what_came(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    client, _ = serve(lambda _: httpx.Response(502, text="<html>Bad gateway</html>\nmore"))
    with pytest.raises(ServerError) as raised:
        client.job(JOB)
    assert (raised.value.status, raised.value.code) == (502, "bad_gateway")
    assert str(raised.value) == "502 Bad Gateway: <html>Bad gateway</html>"


def test_a_503_then_an_answer_is_a_success(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    answers = iter([error(503, "Database down."), httpx.Response(200, json=job_document())])
    client, recorder = serve(lambda _: next(answers))
    assert client.job(JOB).status is JobStatus.COMPLETED
    assert len(recorder.requests) == 2


def test_actions_that_are_not_safe_to_repeat_are_sent_once(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    client, recorder = serve(lambda _: error(503, "Broker down."))
    with pytest.raises(ServiceUnavailable):
        client.retry(JOB)
    with pytest.raises(ServiceUnavailable):
        client.cancel(JOB)
    assert recorder.paths == [f"POST /api/v1/jobs/{JOB}/retry", f"POST /api/v1/jobs/{JOB}/cancel"]

    recorder.requests.clear()
    with pytest.raises(ServiceUnavailable):
        client.delete(JOB)  # the API asks for a DELETE to be sent again on 503
    assert len(recorder.requests) == 3


def test_no_server_and_a_slow_one_are_transport_errors(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client, recorder = serve(refuse)
    with pytest.raises(ConnectError, match=f"cannot reach the Quire server at {SERVER}"):
        client.job(JOB)
    assert len(recorder.requests) == 1  # a server that is down is said at once

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = serve(slow)
    with pytest.raises(Timeout) as raised:
        client.job(JOB)
    assert isinstance(raised.value, TransportError)
    assert isinstance(raised.value.cause, httpx.ReadTimeout)


def test_a_page_that_is_not_the_api_is_unexpected(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    client, _ = serve(lambda _: httpx.Response(200, html="<p>Sign in to the Wi-Fi</p>"))
    with pytest.raises(UnexpectedResponse, match="not a Quire answer"):
        client.job(JOB)
    client, _ = serve(lambda _: httpx.Response(200, json={"job_id": JOB}))  # no status
    with pytest.raises(UnexpectedResponse, match="cannot read"):
        client.job(JOB)


def sse(*events: tuple[str, dict[str, Any]], heartbeat: bool = True) -> bytes:
    text = ": keep-alive\n\n" if heartbeat else ""
    text += "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return text.encode()


def progress(done: int) -> dict[str, Any]:
    return {"total": 2, "pending": 2 - done, "in_progress": 0, "completed": done, "failed": 0}


def test_events_are_read_until_the_job_event(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    stream = sse(
        ("file", {"file_id": "f1", "status": "COMPLETED"}),
        ("progress", progress(1)),
        ("progress", progress(2)),
        ("job", {"status": "COMPLETED", "progress": progress(2)}),
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=stream)
        return httpx.Response(200, json=job_document())

    client, _ = serve(answer)
    names = [event.name for event in client.events(JOB)]
    assert names == ["file", "progress", "progress", "job"]

    seen: list[int] = []
    job = client.wait(JOB, on_progress=lambda counts: seen.append(counts.completed))
    assert seen == [1, 2, 2] and job.status is JobStatus.COMPLETED


class Dropped(httpx.SyncByteStream):
    """An event stream whose connection drops after its first event."""

    def __iter__(self) -> Iterator[bytes]:
        yield sse(("progress", progress(1)))
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_dropped_event_stream_is_broken_and_wait_polls_instead(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    polls = iter([job_document("IN_PROGRESS", completed=1, pending=1), job_document("COMPLETED")])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, stream=Dropped())
        return httpx.Response(200, json=next(polls))

    client, recorder = serve(answer)
    with pytest.raises(EventStreamBroken, match="peer closed connection"):
        list(client.events(JOB))

    recorder.requests.clear()
    broken: list[EventStreamBroken] = []
    seen: list[int] = []
    job = client.wait(
        JOB,
        on_progress=lambda counts: seen.append(counts.completed),
        on_stream_broken=broken.append,
        poll_interval=0.0,
    )
    assert job.status is JobStatus.COMPLETED
    assert seen == [1, 1, 2]  # one from the stream, then one per poll
    assert len(broken) == 1
    assert recorder.paths == [f"GET /api/v1/jobs/{JOB}/events"] + [f"GET /api/v1/jobs/{JOB}"] * 2


def test_a_stream_that_ends_early_or_is_refused_is_broken(
    serve: Callable[[Handler], tuple[Client, Recorder]],
) -> None:
    client, _ = serve(lambda _: httpx.Response(200, content=sse(("progress", progress(1)))))
    with pytest.raises(EventStreamBroken, match="ended before the job did"):
        list(client.events(JOB))

    client, _ = serve(lambda _: error(404, f"No job with id {JOB!r}."))
    with pytest.raises(EventStreamBroken, match="answered 404") as raised:
        list(client.events(JOB))
    assert isinstance(raised.value.cause, NotFound)
    # wait() polls, and the poll says what is really wrong.
    with pytest.raises(NotFound):
        client.wait(JOB, poll_interval=0.0)


def test_a_refused_download_writes_nothing(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    client, _ = serve(lambda _: error(409, f"Job {JOB} is IN_PROGRESS; not ready yet."))
    with pytest.raises(Conflict, match="not ready yet"):
        client.download(JOB, tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []


class CutShort(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"PK\x03\x04" + bytes(1000)
        raise httpx.ReadError("connection reset by peer")


def test_a_download_that_breaks_off_or_is_not_a_zip_leaves_nothing(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    store = "http://store.test/bucket/result.zip?X-Amz-Signature=abc"
    bodies: list[httpx.Response] = [
        httpx.Response(200, stream=CutShort()),
        httpx.Response(200, content=b"<html>not a zip</html>"),
        httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>"),
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "store.test":
            # The signed URL carries its own signature: S3 refuses a second one.
            assert "authorization" not in request.headers
            return bodies.pop(0)
        return httpx.Response(307, headers={"Location": store})

    client, _ = serve(answer)
    target = tmp_path / "out.zip"
    with pytest.raises(DownloadError, match="the download broke off"):
        client.download(JOB, target)
    with pytest.raises(DownloadError, match="not an archive"):
        client.download(JOB, target)
    with pytest.raises(DownloadError, match="403 Forbidden") as raised:
        client.download(JOB, target)
    assert raised.value.status == 403
    assert list(tmp_path.iterdir()) == []  # neither the target nor its .part


def test_one_files_pdf_is_checked_to_be_a_pdf(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    answers = [httpx.Response(200, content=b"%PDF-1.7\n..."), httpx.Response(200, content=b"no")]
    client, recorder = serve(lambda _: answers.pop(0))
    assert client.download_file(JOB, "f/1", tmp_path / "a.pdf") == len(b"%PDF-1.7\n...")
    assert recorder.paths[0] == f"GET /api/v1/jobs/{JOB}/files/f%2F1"
    with pytest.raises(DownloadError, match="not a PDF"):
        client.download_file(JOB, "f1", tmp_path / "b.pdf")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.pdf"]


def archive_of(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"%PDF-1.7 " + name.encode())
    return buffer.getvalue()


def test_an_archive_with_a_name_outside_the_folder_is_refused(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    for name in ("../escape.pdf", "/etc/evil.pdf", "a/../../b.pdf", "C:/x.pdf"):
        client, _ = serve(lambda _, n=name: httpx.Response(200, content=archive_of(["ok.pdf", n])))
        folder = tmp_path / "out"
        with pytest.raises(DownloadError, match="outside its folder"):
            client.download_to_folder(JOB, folder)
        assert list(folder.iterdir()) == [], name  # refused before anything was written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_the_upload_refused_by_the_store_is_an_upload_error(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/uploads":
            offer = {"upload_id": "u1", "url": "http://store.test/u1", "max_bytes": 10**9}
            return httpx.Response(201, json=offer)
        return httpx.Response(403, text="SignatureDoesNotMatch")

    client, recorder = serve(answer)
    document = tmp_path / "a.docx"
    document.write_bytes(make_docx("a"))
    with pytest.raises(UploadError, match="the upload was refused: 403") as raised:
        client.submit(document)
    assert raised.value.status == 403
    assert recorder.paths == ["POST /api/v1/uploads", "PUT /u1"]


def test_the_job_creation_after_a_direct_upload_is_sent_again_with_one_key(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    created = {"job_id": JOB, "status": "PENDING", "file_count": 2, "status_url": "x"}
    creations = iter(
        [
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            error(503, "Database down."),
            httpx.Response(202, json=created),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/uploads":
            offer = {"upload_id": "u1", "url": "/blobs/u1?sig=1", "max_bytes": 10**9}
            return httpx.Response(201, json=offer)
        if request.method == "PUT":
            return httpx.Response(200)
        step = next(creations)
        if isinstance(step, Exception):
            raise step
        return step

    client, recorder = serve(answer)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.docx").write_bytes(make_docx("a"))
    (tmp_path / "in" / "sub" / "b.docx").write_bytes(make_docx("b"))
    submitted = client.submit(tmp_path / "in")
    assert submitted.job_id == JOB and submitted.direct_upload
    posts = [r for r in recorder.requests if r.url.path == "/api/v1/jobs"]
    assert len(posts) == 3
    assert len({r.headers["idempotency-key"] for r in posts}) == 1
    assert json.loads(posts[0].content) == {"upload_id": "u1", "pdf_a": None, "tagged_pdf": False}
    put = next(r for r in recorder.requests if r.method == "PUT")
    assert "authorization" not in put.headers
    with zipfile.ZipFile(io.BytesIO(put.content)) as sent:
        assert sorted(sent.namelist()) == ["a.docx", "sub/b.docx"]


def test_a_server_without_direct_uploads_gets_one_multipart_request(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    created = {"job_id": JOB, "status": "PENDING", "file_count": 2, "status_url": "x"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/uploads":
            return error(404, "Not Found")
        return httpx.Response(202, json=created)

    client, recorder = serve(answer)
    files = []
    for name in ("one.docx", "two.docx"):
        files.append(tmp_path / name)
        files[-1].write_bytes(make_docx(name))
    submitted = client.submit(files)
    assert not submitted.direct_upload and submitted.file_count == 2
    body = recorder.requests[-1].content
    assert recorder.requests[-1].headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="upload.zip"' in body


def test_nothing_to_send_is_an_input_error_before_any_request(
    serve: Callable[[Handler], tuple[Client, Recorder]], tmp_path: Path
) -> None:
    client, recorder = serve(lambda _: httpx.Response(500))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.docx").write_bytes(b"x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "a.docx").write_bytes(b"y")
    (tmp_path / "notes.txt").write_text("text")
    for source, message in [
        (tmp_path / "missing", "does not exist"),
        ([tmp_path / "x" / "a.docx", tmp_path / "y" / "a.docx"], "more than one file is named"),
        ([tmp_path / "notes.txt"], "is not a .docx, .docm, .doc, .rtf or .odt file"),
        ([], "no file given"),
    ]:
        with pytest.raises(InputError, match=message):
            client.submit(source)
    assert recorder.requests == []
