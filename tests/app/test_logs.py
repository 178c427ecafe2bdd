"""Structured logs: one JSON object per line, with the job and file ids bound to every line
logged while a task or a request handles them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import session_scope
from app.logs import JobIdMiddleware, clear_ids, configure_logging
from app.models import File, FileStatus
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.workers.test_pipeline import submit
from workers.libreoffice import PLAIN_PDF, FakeConverter, PdfOptions

log = logging.getLogger("quire.test")


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]


@pytest.fixture
def captured() -> Iterator[Captured]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    yield Captured(stream)
    configure_logging("INFO", "text")  # the handler must not outlive its stream
    clear_ids()


def test_each_line_is_one_json_object_with_its_event_and_fields(captured: Captured) -> None:
    log.info("job.accepted job_id=%s files=%d bytes=%d", "j-1", 3, 1024)
    log.warning("disk.low free=%d%% path=%r", 7, "/var/lib/quire", extra={"host": "w1"})
    log.info("no dotted event here: %s", "plain")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("task.gave_up name=%s", "quire.convert")

    accepted, low, plain, gave_up = captured.lines()
    assert accepted["event"] == "job.accepted"
    assert accepted["message"] == "job.accepted job_id=j-1 files=3 bytes=1024"
    assert (accepted["job_id"], accepted["files"], accepted["bytes"]) == ("j-1", 3, 1024)
    assert accepted["level"] == "INFO" and accepted["logger"] == "quire.test"
    assert "file_id" not in accepted  # nothing bound, nothing made up
    stamp = datetime.fromisoformat(accepted["timestamp"].replace("Z", "+00:00"))
    assert accepted["timestamp"].endswith("Z") and stamp.utcoffset() is not None

    assert low["message"] == "disk.low free=7% path='/var/lib/quire'"
    assert (low["free"], low["path"], low["host"]) == (7, "/var/lib/quire", "w1")
    assert low["level"] == "WARNING"
    assert plain["event"] is None and plain["message"] == "no dotted event here: plain"
    assert gave_up["name"] == "quire.convert" and gave_up["level"] == "ERROR"
    assert "RuntimeError: boom" in gave_up["exception"]


def test_the_text_format_appends_the_bound_ids() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    try:
        from app.logs import bind_ids

        bind_ids(job_id="j-2", file_id="f-2")
        log.info("file.started")
        log.info("file.completed file_id=%s", "f-2")
    finally:
        clear_ids()
        configure_logging("INFO", "text")
    started, completed = stream.getvalue().splitlines()
    assert started.endswith("INFO quire.test file.started [job_id=j-2 file_id=f-2]")
    assert completed.endswith("file.completed file_id=f-2 [job_id=j-2]")


class LoggingConverter(FakeConverter):
    """The fake converter (the process boundary), logging a line that names no id itself."""

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        log.info("test.converting")
        super().convert(source, target, timeout, options)


def test_a_task_binds_its_ids_to_every_line_it_logs(
    backend: Backend,
    sent: SentTasks,
    captured: Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers import tasks

    monkeypatch.setattr(tasks, "get_converter", LoggingConverter)
    job_id = submit(make_zip({"a.docx": make_docx("A"), "b.docx": make_docx("B")}))

    # Task.apply runs the task here, through Celery's tracer and its prerun/postrun signals.
    tasks.ingest.apply(args=[job_id]).get()
    log.info("test.between_tasks")
    for file_id in sent.conversions:
        tasks.convert.apply(args=[file_id]).get()
    tasks.archive.apply(args=[job_id]).get()
    log.info("test.after_tasks")

    with session_scope() as session:
        files = session.execute(select(File.id, File.status).where(File.job_id == job_id)).all()
    assert {status for _, status in files} == {FileStatus.COMPLETED}

    (ingested,) = captured.events("ingest.batch")
    assert ingested["job_id"] == job_id
    converting = captured.events("test.converting")
    assert sorted(line["file_id"] for line in converting) == sorted(id_ for id_, _ in files)
    assert all(line["job_id"] == job_id for line in converting)
    completed = captured.events("file.completed")
    assert {(line["job_id"], line["file_id"]) for line in completed} == {
        (job_id, file_id) for file_id, _ in files
    }
    (archived,) = captured.events("job.completed")
    assert archived["job_id"] == job_id and "file_id" not in archived
    # Outside a task nothing is bound: the ids do not leak from one task to what follows.
    for event in ("test.between_tasks", "test.after_tasks"):
        (line,) = captured.events(event)
        assert "job_id" not in line and "file_id" not in line


def test_a_request_binds_the_job_id_of_its_path(captured: Captured) -> None:
    app = FastAPI()

    @app.get("/api/v1/jobs/{job_id}/events")
    async def in_the_event_loop(job_id: str) -> dict[str, str]:
        log.info("test.async_route")
        return {}

    @app.get("/api/v1/jobs/{job_id}")
    def in_a_thread(job_id: str) -> dict[str, str]:
        log.info("test.sync_route")
        return {}

    @app.get("/api/v1/jobs")
    def no_job() -> dict[str, str]:
        log.info("test.list_route")
        return {}

    app.add_middleware(JobIdMiddleware)
    job_id = "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a"
    with TestClient(app) as client:
        assert client.get(f"/api/v1/jobs/{job_id}/events").status_code == 200
        assert client.get(f"/api/v1/jobs/{job_id.upper()}").status_code == 200
        assert client.get("/api/v1/jobs").status_code == 200
    assert captured.events("test.async_route")[0]["job_id"] == job_id
    assert captured.events("test.sync_route")[0]["job_id"] == job_id
    assert "job_id" not in captured.events("test.list_route")[0]
