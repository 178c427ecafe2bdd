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

import app.logs
from app.db import session_scope
from app.logs import JobIdMiddleware, bind_ids, clear_ids, configure_logging, get_logger
from app.models import File, FileStatus, JobStatus
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.workers.helpers import submit
from workers.libreoffice import PLAIN_PDF, FakeConverter, PdfOptions

log = get_logger("quire.test")


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


@pytest.fixture
def text() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    yield stream
    configure_logging("INFO", "text")
    clear_ids()


def test_each_line_is_one_json_object_with_its_event_and_fields(captured: Captured) -> None:
    log.info("job.accepted", job_id="j-1", files=3, bytes=1024)
    log.warning("disk.low", free=7, path=Path("/var/lib/quire"), extra={"host": "w1"})
    logging.getLogger("quire.test").info("no dotted event here: %s", "plain")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("task.gave_up", name="quire.convert")

    accepted, low, plain, gave_up = captured.lines()
    assert accepted["event"] == "job.accepted"
    assert accepted["message"] == "job.accepted job_id=j-1 files=3 bytes=1024"
    assert (accepted["job_id"], accepted["files"], accepted["bytes"]) == ("j-1", 3, 1024)
    assert accepted["level"] == "INFO" and accepted["logger"] == "quire.test"
    assert "file_id" not in accepted  # nothing bound, nothing made up
    stamp = datetime.fromisoformat(accepted["timestamp"].replace("Z", "+00:00"))
    assert accepted["timestamp"].endswith("Z") and stamp.utcoffset() is not None

    # A string stands as it is in the message, anything else as its repr; in JSON a value of
    # no JSON type is its str(). ``extra=`` is a field the message does not show.
    assert low["message"] == "disk.low free=7 path=PosixPath('/var/lib/quire')"
    assert (low["free"], low["path"], low["host"]) == (7, "/var/lib/quire", "w1")
    assert low["level"] == "WARNING"
    assert plain["event"] is None and plain["message"] == "no dotted event here: plain"
    assert gave_up["name"] == "quire.convert" and gave_up["level"] == "ERROR"
    assert gave_up["message"] == "task.gave_up name=quire.convert"
    assert "RuntimeError: boom" in gave_up["exception"]


def test_the_text_format_appends_the_bound_ids(text: io.StringIO) -> None:
    bind_ids(job_id="j-2", file_id="f-2")
    log.info("file.started")
    log.info("file.completed", file_id="f-2")
    started, completed = text.getvalue().splitlines()
    assert started.endswith("INFO quire.test file.started [job_id=j-2 file_id=f-2]")
    assert completed.endswith("file.completed file_id=f-2 [job_id=j-2]")


def test_fields_keep_their_types(captured: Captured, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "quire.test"):
        log.info(
            "test.types",
            count=3,
            ratio=0.5,
            direct=True,
            error=None,
            status=JobStatus.COMPLETED,
            failure=ValueError("bad"),
        )
    (line,) = captured.lines()
    assert line["message"] == (
        "test.types count=3 ratio=0.5 direct=True error=None status=COMPLETED "
        "failure=ValueError('bad')"
    )
    expected = {"count": 3, "ratio": 0.5, "direct": True, "error": None}
    assert {key: line[key] for key in expected} == expected
    assert type(line["count"]) is int and type(line["direct"]) is bool
    assert (line["status"], line["failure"]) == ("COMPLETED", "bad")
    # The record carries them as passed, and the caller's place, not app/logs.py's.
    (record,) = caplog.records
    assert record.event == "test.types"  # type: ignore[attr-defined]
    assert record.fields["failure"].args == ("bad",)  # type: ignore[attr-defined]
    assert record.funcName == "test_fields_keep_their_types" and record.pathname == __file__


def test_a_value_is_never_read_as_fields_or_template(captured: Captured) -> None:
    # Before, fields were parsed out of the message's format string: text that looks like
    # ``key=%s`` in a value (a file name is the uploader's choice) must stay a value.
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(app.logs.TextFormatter())
    logging.getLogger().addHandler(handler)
    try:
        log.warning("convert.retry", source="a=%s b=%d.docx", after="ConversionTimeout")
        log.info("ingest.refused", "100% done, x=%s", job_id="j=%(job)s")
        log.info("test.note", "50%% of y=1")
        # One mapping as the only argument is the standard library's named-placeholder form.
        log.info("test.mapping", counts={"a": 1})
    finally:
        logging.getLogger().removeHandler(handler)
    retry, refused, note, mapping = captured.lines()
    assert retry["message"] == "convert.retry source=a=%s b=%d.docx after=ConversionTimeout"
    assert (retry["source"], retry["after"]) == ("a=%s b=%d.docx", "ConversionTimeout")
    assert refused["message"] == "ingest.refused job_id=j=%(job)s 100% done, x=%s"
    assert refused["job_id"] == "j=%(job)s"
    assert note["message"] == "test.note 50%% of y=1"
    assert (mapping["message"], mapping["counts"]) == ("test.mapping counts={'a': 1}", "{'a': 1}")
    standard = {"timestamp", "level", "logger", "event", "message"}
    assert set(retry) == standard | {"source", "after"}
    assert set(refused) == standard | {"job_id"}
    assert set(note) == standard
    assert [line.split(" ", 4)[4] for line in text.getvalue().splitlines()] == [
        line["message"] for line in (retry, refused, note, mapping)
    ]


def test_a_format_string_is_not_parsed_for_fields(captured: Captured) -> None:
    # Only what is passed as a field is one: the regular expressions that read fields out of
    # a format string are gone, and a plain standard-library call gets the message alone.
    for name in ("EVENT", "PLACEHOLDER", "message_fields"):
        assert not hasattr(app.logs, name)
    logging.getLogger("quire.test").info("job.accepted job_id=%s files=%d", "j-3", 3)
    (line,) = captured.lines()
    assert line["message"] == "job.accepted job_id=j-3 files=3"
    assert line["event"] is None and "job_id" not in line and "files" not in line


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
