"""The Celery configuration, shared by the API (which only sends) and the workers.

The API enqueues tasks by name so it never imports ``workers`` (and never needs LibreOffice).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.exceptions import ChannelError

from app.config import Settings, get_settings

# Two queues: conversions, and the short control tasks (ingest, archive, sweep), so that a job's
# ingest or archive never waits behind thousands of queued conversions. Workers consume both.
CONVERT_QUEUE = "quire-convert"
CONTROL_QUEUE = "quire-control"

INGEST_TASK = "quire.ingest"
CONVERT_TASK = "quire.convert"
ARCHIVE_TASK = "quire.archive"
SWEEP_TASK = "quire.sweep"
WEBHOOK_TASK = "quire.webhook"


def celery_config(settings: Settings) -> dict[str, Any]:
    # A message is redelivered when not acknowledged within the visibility timeout, so it must
    # outlast the longest wait in the queue plus the hard limit, or long queues run twice.
    visibility_timeout = max(
        6 * 3600, 4 * settings.task_hard_time_limit, 2 * settings.job_task_time_limit
    )
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": visibility_timeout},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # Acknowledge after the task ran, and give the message back if its worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Worker processes, each with its own LibreOffice: QUIRE_WORKER_CONCURRENCY (cores).
        "worker_concurrency": settings.worker_concurrency,
        "task_queues": (Queue(CONTROL_QUEUE), Queue(CONVERT_QUEUE)),
        "task_default_queue": CONTROL_QUEUE,
        "task_routes": {CONVERT_TASK: {"queue": CONVERT_QUEUE}},
        # The conversion task's limits; ingest and archive declare their own (workers.tasks).
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_hard_time_limit,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "sweep": {"task": SWEEP_TASK, "schedule": float(settings.sweep_interval)},
        },
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("quire")
    celery.conf.update(celery_config(settings))
    return celery


@lru_cache
def get_sender() -> Celery:
    return make_celery()


def send_ingest(job_id: str) -> None:
    get_sender().send_task(INGEST_TASK, args=[job_id])


def send_conversions(file_ids: Iterable[str]) -> None:
    sender = get_sender()
    # One broker connection for the whole batch instead of one per message.
    with sender.producer_or_acquire() as producer:
        for file_id in file_ids:
            sender.send_task(CONVERT_TASK, args=[file_id], producer=producer)


def send_archive(job_id: str) -> None:
    get_sender().send_task(ARCHIVE_TASK, args=[job_id])


def send_webhook(delivery_id: str, countdown: float | None = None) -> None:
    """One attempt of a webhook delivery, on the control queue (the default one): a callback is
    short and must not wait behind thousands of queued conversions."""
    get_sender().send_task(WEBHOOK_TASK, args=[delivery_id], countdown=countdown)


def queued_conversions() -> int:
    """Messages waiting in the conversion queue (not counting those being worked on)."""
    with get_sender().connection_for_write() as connection:
        channel: Any = connection.default_channel  # a kombu virtual channel (Redis)
        try:
            return int(channel.queue_declare(CONVERT_QUEUE, passive=True).message_count)
        except ChannelError:  # Redis drops an empty queue's key: nothing is waiting
            return 0
