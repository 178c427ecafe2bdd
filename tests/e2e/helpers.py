"""Helpers the end-to-end tests share: a test module imports them from here, never from
another test module (the fixtures and ``Service`` are in tests/e2e/conftest.py)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import TERMINAL, FaultRecord, Service
from tests.pdf import pdf_pages

# -- the service's settings --------------------------------------------------------------------


def embedded_env() -> dict[str, str]:
    return {"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "e2e-secret"}


def compose_like_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """PostgreSQL, an S3 server and a shared Redis: the shape of the docker compose stack."""
    from tests.conftest import _fresh_database

    return {
        **embedded_env(),
        "QUIRE_DATABASE_URL": _fresh_database(request.getfixturevalue("postgres_url"), "e2e"),
        "QUIRE_BROKER_URL": request.getfixturevalue("redis_url").replace("/0", "/5"),
        "QUIRE_STORAGE_BACKEND": "s3",
        "QUIRE_S3_ENDPOINT_URL": request.getfixturevalue("s3_endpoint"),
        "QUIRE_S3_BUCKET": "quire-e2e",
        "QUIRE_S3_ACCESS_KEY": "test",
        "QUIRE_S3_SECRET_KEY": "test",
    }


# -- proxies in front of the service -----------------------------------------------------------


class ForwardingProxy(BaseHTTPRequestHandler):
    """An HTTP proxy in front of the real service (the fake is at the network boundary only):
    subclasses refuse some requests themselves, or lose some answers on the way back."""

    upstream = ""

    def refused(self) -> bool:
        """Answer this request here instead of forwarding it; True if it was."""
        return False

    def answer_lost(self) -> bool:
        """Drop the service's answer to this request and close the connection."""
        return False

    def _forward(self) -> None:
        if self.refused():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = httpx.request(
            self.command, self.upstream + self.path, headers=headers, content=body, timeout=60
        )
        if self.answer_lost():
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("transfer-encoding", "content-encoding", "connection"):
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def proxy_to(upstream: str, kind: type[ForwardingProxy]) -> Iterator[str]:
    """Run a proxy of ``kind`` in front of ``upstream``; yields its URL."""
    handler = type("Handler", (kind,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class OldServerProxy(ForwardingProxy):
    """A server without direct uploads (404), behind a proxy that refuses event streams."""

    def refused(self) -> bool:
        if self.path == "/api/v1/uploads":
            self.send_error(404, "Not Found")
            return True
        if self.path.endswith("/events"):
            self.send_error(502, "no streams through this proxy")
            return True
        return False


# -- the runner's processes, and jobs timed with and without a fault ---------------------------

# How each process the runner supervises shows in its command line (infra/run_embedded.py).
RUNNER_PROCESSES = {
    "worker": ("celery", " worker"),
    "beat": ("celery", " beat"),
    "api": ("uvicorn",),
    "redis": ("redis-server",),
}


def runner_process(service: Service, name: str) -> int | None:
    """The live process the runner started as ``name`` (a worker's main process), or None."""
    from tests.services import cmdline, descendants, parent_of

    assert service.process is not None
    runner = service.process.pid
    for pid in descendants(runner):
        line = cmdline(pid)
        if parent_of(pid) == runner and all(part in line for part in RUNNER_PROCESSES[name]):
            return pid
    return None


def restarted(service: Service, name: str, dead: int, timeout: float = 90) -> int:
    """Wait until the runner started ``name`` again (a process other than ``dead``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.process is not None and service.process.poll() is None, service.log_tail()
        pid = runner_process(service, name)
        if pid is not None and pid != dead:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"the runner did not restart {name}:\n{service.log_tail()}")


def kill_runner_process(service: Service, name: str) -> int:
    """SIGKILL the runner's ``name`` (as the OOM killer would); returns the pid killed."""
    pid = runner_process(service, name)
    assert pid is not None, f"no {name} process:\n{service.log_tail()}"
    os.kill(pid, signal.SIGKILL)
    return pid


def text_batch(count: int, tag: str) -> tuple[bytes, dict[str, str]]:
    """A zip of ``count`` documents, each with its own text: entry name -> that text."""
    markers = {f"{tag}/doc-{i:03}.docx": f"{tag} document {i}" for i in range(count)}
    return make_zip({name: make_docx(text) for name, text in markers.items()}), markers


def run_batch(
    service: Service,
    ledger: FaultRecord,
    batch: tuple[bytes, dict[str, str]],
    fault: Callable[[str], None] | None = None,
) -> float:
    """Submit ``batch``, inject ``fault(job_id)`` once a few of its files are done (the job
    still running), and account for every file: its PDF, once, with its own text. Returns the
    seconds from the submission to the end of the job."""
    data, markers = batch
    started = time.monotonic()
    response = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", data, "application/zip")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id = str(response.json()["job_id"])
    ledger.inputs += len(markers)
    ledger.jobs += 1
    if fault is not None:
        status = wait_for_job(service, ledger, job_id, lambda s: s["progress"]["completed"] >= 3)
        assert status["progress"]["percent"] < 100, "the job ended before the fault"
        fault(job_id)
    status = wait_for_job(service, ledger, job_id, lambda s: s["status"] in TERMINAL)
    took = time.monotonic() - started
    files = {f["filename"]: f for f in status["files"]}
    lost = {name for name, f in files.items() if f["status"] not in TERMINAL}
    if status["status"] == "COMPLETED":
        ledger.jobs_completed += 1
        download = httpx.get(str(status["download_url"]), follow_redirects=True, timeout=120)
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            names = archive.namelist()
            ledger.duplicates += len(names) - len(set(names))
            for name, text in markers.items():
                pdf = files[name]["output_name"]
                if files[name]["status"] != "COMPLETED" or pdf not in names:
                    lost.add(name)
                elif text not in pdf_pages(archive.read(pdf))[0]:
                    lost.add(name)  # a PDF, but not this document's
    else:
        lost |= set(markers)
    ledger.files_lost += len(lost)
    assert status["status"] == "COMPLETED", (status["error_message"], service.log_tail())
    assert not lost, f"lost: {sorted(lost)[:5]}"
    assert ledger.duplicates == 0
    assert ledger.server_errors == 0
    return took


def wait_for_job(
    service: Service,
    ledger: FaultRecord,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 600,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = ledger.get(f"{service.url}/api/v1/jobs/{job_id}")
        if response.status_code == 200:
            status: dict[str, Any] = response.json()
            if until(status):
                return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there:\n{service.log_tail()}")
