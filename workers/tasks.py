"""Celery tasks: thin, taking ids only; the logic lives in plain functions beside them.

Reliability, stated once here: messages are acknowledged after the task ran and given back if
its worker dies (``app.queue``); every task is idempotent; transient store and database
errors are retried with backoff; a task that keeps failing leaves its file or job FAILED with
a message rather than stuck.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from app import queue, transitions
from app.config import get_settings
from app.db import session_scope
from app.storage import StoreError, get_store
from workers.archive import build_archive, start_archive_if_done
from workers.celery_app import celery
from workers.convert import convert_file
from workers.ingest import ingest_job
from workers.runtime import close_converter, get_converter
from workers.sweeper import sweep

log = logging.getLogger("quire.tasks")
MAX_RETRIES = 8


def _transient(error: BaseException) -> bool:
    if isinstance(error, StoreError):
        return error.transient
    return isinstance(error, OperationalError | OSError | ConnectionError)


def _run(task: Task[Any, Any], work: Callable[[], None], give_up: Callable[[str], None]) -> None:
    """Run ``work``; retry transient failures with backoff, then ``give_up`` with a message."""
    try:
        work()
    except SoftTimeLimitExceeded:
        close_converter()  # the instance may be wedged; the next task starts a fresh one
        give_up("The conversion exceeded the task's time limit and was stopped.")
    except Exception as error:
        if _transient(error) and task.request.retries < MAX_RETRIES:
            delay = min(2**task.request.retries, 60)
            log.warning(
                "task.retry name=%s retries=%d error=%r", task.name, task.request.retries, error
            )
            raise task.retry(exc=error, countdown=delay) from error
        log.exception("task.gave_up name=%s", task.name)
        give_up(
            f"Processing failed after {task.request.retries + 1} attempts: "
            f"{type(error).__name__}: {error}"
        )


@celery.task(name=queue.INGEST_TASK, bind=True, max_retries=MAX_RETRIES)
def ingest(self: Task[Any, Any], job_id: str) -> None:
    def give_up(message: str) -> None:
        with session_scope() as session:
            transitions.fail_job(session, job_id, f"The upload could not be unpacked. {message}")

    _run(self, lambda: ingest_job(job_id, get_store(), get_settings()), give_up)


@celery.task(name=queue.CONVERT_TASK, bind=True, max_retries=MAX_RETRIES)
def convert(self: Task[Any, Any], file_id: str) -> None:
    def give_up(message: str) -> None:
        with session_scope() as session:
            transitions.fail_files(session, [file_id], message)
            job_id = session.execute(transitions.job_of_file(file_id)).scalar_one_or_none()
        if job_id is not None:
            start_archive_if_done(job_id)

    _run(self, lambda: convert_file(file_id, get_store(), get_converter(), get_settings()), give_up)


@celery.task(name=queue.ARCHIVE_TASK, bind=True, max_retries=MAX_RETRIES)
def archive(self: Task[Any, Any], job_id: str) -> None:
    def give_up(message: str) -> None:
        with session_scope() as session:
            transitions.fail_job(
                session, job_id, f"The result archive could not be built. {message}"
            )

    _run(self, lambda: build_archive(job_id, get_store()), give_up)


@celery.task(name=queue.SWEEP_TASK)
def sweeper(resume_in_progress: bool = False) -> dict[str, Any]:
    return sweep(get_settings(), resume_in_progress=resume_in_progress)
