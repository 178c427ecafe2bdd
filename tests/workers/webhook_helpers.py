"""A real webhook receiver and the helpers the tests of webhook deliveries share: a test module
imports them from here, never from another test module. The ``receiver`` fixture is in
tests/workers/conftest.py."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import WebhookDelivery, utcnow
from app.storage import get_store, upload_key
from app.zipinput import list_docx_entries
from tests.conftest import SentTasks
from tests.docx_factory import make_docx, make_zip
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import FakeConverter

# -- a real receiver ---------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers the next of ``answers`` (then 200), after ``delay`` s."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    location: str = ""  # the Location header sent with a 3xx answer
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/hooks/quire?token=abc"

    def start(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    code = receiver.answers.pop(0) if receiver.answers else 200
                time.sleep(receiver.delay)
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up waiting (the timeout test) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Clock:
    """The time ``deliver`` is given: retries are due in the database, so moving this clock is
    all a retry needs."""

    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- helpers -----------------------------------------------------------------------------------


def submit(documents: dict[str, bytes], callback_url: str | None) -> str:
    """What POST /api/v1/jobs does, minus HTTP."""
    job_id = new_job_id()
    data = make_zip(documents)
    store = get_store()
    store.put_bytes(upload_key(job_id), data, "application/zip")
    with store.open_reader(upload_key(job_id)) as source:
        entries = list_docx_entries(source, 100)
    with session_scope() as session:
        create_job(session, JobSpec(job_id, len(data), callback_url=callback_url), entries)
    return job_id


def run_job(job_id: str, sent: SentTasks) -> None:
    """Ingest, convert (LibreOffice faked: it is not what these tests are about), archive."""
    settings, store, converter = get_settings(), get_store(), FakeConverter()
    ingest_job(job_id, store, settings)
    while sent.conversions:
        convert_file(sent.conversions.pop(0), store, converter, settings)
    while sent.archives:
        build_archive(sent.archives.pop(0), store)


def delivery(delivery_id: str) -> WebhookDelivery:
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


def finished_job(receiver: Receiver, sent: SentTasks, webhooks_sent: list[str]) -> str:
    """A job that ended COMPLETED with a callback to the receiver; returns its delivery id."""
    job_id = submit({"a.docx": make_docx("Alpha"), "bad.docx": b"not a docx"}, receiver.url)
    run_job(job_id, sent)
    assert len(webhooks_sent) == 1
    return webhooks_sent[0]


def settings_with(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> Settings:
    """The settings once ``name`` is set to ``value`` (for the rest of the test)."""
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


# -- the tests ---------------------------------------------------------------------------------
