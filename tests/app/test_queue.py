"""Work is sent after commit, in one place: ``queue_after_commit`` and ``app.db.session_scope``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kombu import Consumer, Message, Queue

from app import queue
from app.db import get_sessionmaker, session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import Job
from tests.conftest import Backend, SentTasks


def committed(job_id: str) -> bool:
    """Whether another transaction sees the job: what a worker receiving its id would see."""
    with session_scope() as session:
        return session.get(Job, job_id) is not None


def test_a_send_queued_in_a_committed_transaction_goes_once_after_the_commit(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        queue, "send_ingest", lambda job_id: seen.append((job_id, committed(job_id)))
    )
    job_id = new_job_id()
    with session_scope() as session:
        create_job(session, JobSpec(job_id=job_id, upload_bytes=0), [])
        queue.queue_after_commit(session, queue.INGEST_TASK, job_id)
        assert seen == []  # not while the transaction is open
    assert seen == [(job_id, True)]  # once, and the row was there for the worker


def test_a_send_queued_in_a_rolled_back_transaction_never_goes(
    backend: Backend, sent: SentTasks
) -> None:
    job_id = new_job_id()
    with pytest.raises(RuntimeError, match="undone"), session_scope() as session:
        create_job(session, JobSpec(job_id=job_id, upload_bytes=0), [])
        queue.queue_after_commit(session, queue.INGEST_TASK, job_id)
        queue.queue_after_commit(session, queue.CONVERT_TASK, "f1", "f2")
        raise RuntimeError("undone")
    assert (sent.ingests, sent.conversions) == ([], [])
    assert not committed(job_id)


def test_a_failed_send_is_logged_and_the_others_still_go(
    backend: Backend,
    sent: SentTasks,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broker_down(file_ids: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue, "send_conversions", broker_down)
    job_id = new_job_id()
    with caplog.at_level(logging.WARNING, "quire.queue"), session_scope() as session:
        create_job(session, JobSpec(job_id=job_id, upload_bytes=0), [])
        queue.queue_after_commit(session, queue.CONVERT_TASK, "f1", "f2")
        queue.queue_after_commit(session, queue.ARCHIVE_TASK, job_id)
    # The scope did not raise: the job is committed, and the sweeper sends what was lost.
    assert committed(job_id)
    assert sent.archives == [job_id]
    [record] = caplog.records
    assert record.getMessage() == "file.enqueue_failed file_ids=f1,f2"
    assert record.levelno == logging.WARNING
    assert record.task == queue.CONVERT_TASK  # type: ignore[attr-defined]
    assert record.exc_info is not None


def test_sends_are_grouped_as_the_broker_takes_them(backend: Backend, sent: SentTasks) -> None:
    with session_scope() as session:
        queue.queue_after_commit(session, queue.CONVERT_TASK, "f1", "f2")
        queue.queue_after_commit(session, queue.CONVERT_TASK)  # nothing to send
        queue.queue_after_commit(session, queue.INGEST_TASK, "j1", "j2")
    assert (sent.conversions, sent.ingests) == (["f1", "f2"], ["j1", "j2"])


def test_a_session_nobody_flushes_refuses_sends(backend: Backend) -> None:
    session = get_sessionmaker()()
    try:
        with pytest.raises(RuntimeError, match="session_scope"):
            queue.queue_after_commit(session, queue.INGEST_TASK, "j1")
    finally:
        session.close()


def test_a_handed_over_conversion_is_taken_before_those_waiting(backend: Backend) -> None:
    """A file sent again for a dead worker must not wait behind the whole queue a second time:
    through the real Redis, a consumer (as a worker's, by BRPOP) takes it first."""
    queue.send_conversions(["waiting-1", "waiting-2", "waiting-3"])
    queue.send_handovers(["handed-over"])
    taken: list[str] = []

    def take(body: Any, message: Message) -> None:
        taken.append(body[0][0])  # Celery's protocol 2: [args, kwargs, embed]
        message.ack()

    with queue.get_sender().connection_for_write() as connection:
        try:
            with Consumer(connection, [Queue(queue.CONVERT_QUEUE)], callbacks=[take]):
                while len(taken) < 4:
                    connection.drain_events(timeout=10)
        finally:
            connection.default_channel.queue_purge(queue.CONVERT_QUEUE)
    assert taken == ["handed-over", "waiting-1", "waiting-2", "waiting-3"]
