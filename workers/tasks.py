"""Celery tasks: thin, taking ids only; the logic lives in plain functions beside them.

Reliability, stated once here: messages are acknowledged after the task ran and given back if
its worker dies (``app.queue``); every task is idempotent; transient store and database
errors are retried with backoff; a task that keeps failing leaves its file or job FAILED with
a message rather than stuck.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import OperationalError

from app import queue, transitions, webhooks
from app.config import get_settings
from app.db import session_scope
from app.logs import get_logger
from app.storage import StoreError, get_store
from workers import metrics
from workers.archive import build_archive
from workers.celery_app import celery
from workers.file_conversion import ScratchSpaceError, convert_file, fail_file, held_claim
from workers.ingest import ingest_job
from workers.libreoffice import ConverterUnavailable
from workers.orphans import remove_orphan_uploads
from workers.runtime import close_converter, get_converter
from workers.sweeper import SweepLock, expire, expire_uploads, sweep
from workers.webhooks import deliver

log = get_logger("quire.tasks")
MAX_RETRIES = 8
# Errors that say nothing about the document or the job, only that a service was briefly away.
TRANSIENT = (
    OperationalError,  # the database
    KombuOperationalError,  # the broker
    ConverterUnavailable,  # LibreOffice could not start
    ConnectionError,
    OSError,
)
SCRATCH_RETRIES = 3  # a full scratch disk may free up; if not, the file fails saying so


def _transient(error: BaseException) -> bool:
    if isinstance(error, StoreError):
        return error.transient
    return isinstance(error, TRANSIENT)


def _run(
    task: Task[Any, Any],
    work: Callable[[], None],
    give_up: Callable[[str], None],
    timed_out: str,
    before_retry: Callable[[], None] | None = None,
) -> None:
    """Run ``work``; retry transient failures with backoff, then ``give_up`` with a message."""
    try:
        work()
    except SoftTimeLimitExceeded:
        metrics.task_gave_up(task.name)
        give_up(timed_out)
    except Exception as error:
        limit = SCRATCH_RETRIES if isinstance(error, ScratchSpaceError) else MAX_RETRIES
        retry = isinstance(error, ScratchSpaceError) or _transient(error)
        if retry and task.request.retries < limit:
            if before_retry is not None:
                before_retry()
            delay = min(2**task.request.retries, 60)
            metrics.task_retried(task.name)
            log.warning("task.retry", name=task.name, retries=task.request.retries, error=error)
            raise task.retry(exc=error, countdown=delay) from error
        log.exception("task.gave_up", name=task.name)
        metrics.task_gave_up(task.name)
        give_up(f"Processing failed after {task.request.retries + 1} attempts: {error}")


def _fail_job(job_id: str, message: str) -> None:
    with session_scope() as session:
        if transitions.fail_job(session, job_id, message):
            webhooks.schedule_delivery(session, job_id)


# Ingest and archive work on a whole job, so they get the job's limit, not a conversion's.
JOB_SOFT_LIMIT: int = get_settings().job_task_time_limit
JOB_HARD_LIMIT: int = JOB_SOFT_LIMIT + 60


@celery.task(
    name=queue.INGEST_TASK,
    bind=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=JOB_SOFT_LIMIT,
    time_limit=JOB_HARD_LIMIT,
)
def ingest(self: Task[Any, Any], job_id: str) -> None:
    _run(
        self,
        lambda: ingest_job(job_id, get_store(), get_settings()),
        lambda message: _fail_job(job_id, f"The upload could not be unpacked. {message}"),
        timed_out="Unpacking the upload took longer than QUIRE_JOB_TASK_TIME_LIMIT allows.",
    )


@celery.task(name=queue.CONVERT_TASK, bind=True, max_retries=MAX_RETRIES)
def convert(self: Task[Any, Any], file_id: str) -> None:
    def give_up(message: str) -> None:
        close_converter()  # it may be wedged: the next conversion starts a fresh instance
        # Fenced by this task's claim, if it made one: a worker that re-claimed the file since
        # is converting it, and this give-up must not fail it under that worker.
        fail_file(file_id, message, reason="gave_up", token=held_claim(file_id))

    def release() -> None:
        token = held_claim(file_id)
        if token is None:
            return  # this try claimed nothing (the claim itself failed): nothing to give back
        try:
            with session_scope() as session:
                transitions.release_file(session, file_id, token)
        except Exception:  # noqa: BLE001 - the database may be the outage; then the try counts
            log.warning("task.release_failed", file_id=file_id)

    _run(
        self,
        lambda: convert_file(file_id, get_store(), get_converter(), get_settings()),
        give_up,
        timed_out="The conversion exceeded the task's time limit and was stopped.",
        before_retry=release,
    )


@celery.task(
    name=queue.ARCHIVE_TASK,
    bind=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=JOB_SOFT_LIMIT,
    time_limit=JOB_HARD_LIMIT,
)
def archive(self: Task[Any, Any], job_id: str) -> None:
    _run(
        self,
        lambda: build_archive(job_id, get_store()),
        lambda message: _fail_job(job_id, f"The result archive could not be built. {message}"),
        timed_out="Building the archive took longer than QUIRE_JOB_TASK_TIME_LIMIT allows.",
    )


# A callback's connect, send and answer each have QUIRE_WEBHOOK_TIMEOUT; the delivery's lease
# outlasts the hard limit, so a killed task's attempt is taken up again by the sweeper.
WEBHOOK_SOFT_LIMIT: int = webhooks.task_soft_time_limit(get_settings())


@celery.task(
    name=queue.WEBHOOK_TASK,
    bind=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=WEBHOOK_SOFT_LIMIT,
    time_limit=WEBHOOK_SOFT_LIMIT + 15,
)
def deliver_webhook(self: Task[Any, Any], delivery_id: str) -> None:
    def work() -> None:
        attempt = deliver(delivery_id, get_settings())
        if attempt.retry_in is not None:
            # Only a shortcut, sent after deliver() committed the attempt: the next one is due
            # in the database, and the sweeper sends it if this message is lost.
            queue.send_now(queue.WEBHOOK_TASK, delivery_id, countdown=attempt.retry_in)

    _run(
        self,
        work,
        # Nothing to mark: the delivery's lease runs out and the sweeper sends it again.
        lambda message: log.warning("webhook.gave_up", message, delivery_id=delivery_id),
        timed_out="The callback took longer than the task's time limit.",
    )


@celery.task(name=queue.SWEEP_TASK)
def sweeper(resume_in_progress: bool = False) -> dict[str, Any]:
    """One sweep, under the sweep lock: when another sweep holds it, this one skips."""
    lock = SweepLock(get_settings())
    if not lock.take():
        log.info("sweep.skipped", reason="another sweep holds the lock")
        return {"skipped": True}
    try:
        summary: dict[str, Any] = sweep(get_settings(), resume_in_progress=resume_in_progress)
        if lock.take():  # renewed between the steps: a slow sweep keeps its lock
            summary["expired"] = expire(get_settings(), get_store(), still_mine=lock.take)
        if lock.take():
            summary["expired_uploads"] = expire_uploads(get_settings(), get_store())
        if lock.take():
            summary["orphan_uploads"] = remove_orphan_uploads(get_settings(), get_store())
    finally:
        lock.release()
    return summary
