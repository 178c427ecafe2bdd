"""The Celery configuration, task names and the sender, shared by the API and the workers.

The API enqueues tasks by name so it never imports ``workers`` (and never needs LibreOffice).

Work is sent only after the transaction that decided it has committed, so a worker never gets
an id whose row it cannot see yet, and nothing is sent for a decision that was rolled back.
Callers say ``queue_after_commit(session, TASK, *ids)`` inside ``app.db.session_scope``; the
scope hands what was queued to ``send_all`` once ``commit()`` succeeded. ``send_all`` is the one
policy for a send that fails (the broker is away): a warning naming the task and the ids, and
nothing raised, because the rows are committed and the sweeper (``workers.sweeper``) sends again
whatever is stale or due. The ``send_*`` functions below are the process boundary: tests replace
them to capture what would reach the broker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu import Queue
from kombu.exceptions import ChannelError

from app.config import Settings, get_settings
from app.logs import get_logger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = get_logger("quire.queue")

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


def check_broker(timeout: int) -> None:
    """Raise when the broker cannot be reached (readiness probe)."""
    with get_sender().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)


def send_ingest(job_id: str) -> None:
    get_sender().send_task(INGEST_TASK, args=[job_id])


# Message priorities. kombu's Redis transport keeps one list per step of its priority_steps
# (0, 3, 6, 9) for each queue and a worker empties them in that order, 0 first. Conversions go
# at NORMAL_PRIORITY; a conversion handed over from a dead worker goes at HANDOVER_PRIORITY, so
# it is taken before every conversion waiting instead of waiting behind the whole queue a second
# time. (The control queue's tasks keep the default, 0: they were never behind conversions.)
HANDOVER_PRIORITY = 0
NORMAL_PRIORITY = 6


def send_conversions(file_ids: Iterable[str], priority: int = NORMAL_PRIORITY) -> None:
    sender = get_sender()
    # One broker connection for the whole batch instead of one per message.
    with sender.producer_or_acquire() as producer:
        for file_id in file_ids:
            sender.send_task(CONVERT_TASK, args=[file_id], producer=producer, priority=priority)


def send_handovers(file_ids: Iterable[str]) -> None:
    """Conversions the sweeper sends again for a dead worker: ahead of the queue."""
    send_conversions(file_ids, priority=HANDOVER_PRIORITY)


def send_archive(job_id: str) -> None:
    get_sender().send_task(ARCHIVE_TASK, args=[job_id])


def send_webhook(delivery_id: str, countdown: float | None = None) -> None:
    """One attempt of a webhook delivery, on the control queue (the default one): a callback is
    short and must not wait behind thousands of queued conversions."""
    get_sender().send_task(WEBHOOK_TASK, args=[delivery_id], countdown=countdown)


# Where a session keeps the sends queued on it (``Session.info``); set by app.db.session_scope.
PENDING_SENDS = "quire.pending_sends"


@dataclass(frozen=True)
class Send:
    """One task to send for each id (conversions go as one batch), after the commit."""

    task: str
    ids: tuple[str, ...]
    countdown: float | None = None
    handover: bool = False  # conversions of a dead worker: sent ahead of the queue


def queue_after_commit(
    session: Session,
    task: str,
    *ids: str,
    countdown: float | None = None,
    handover: bool = False,
) -> None:
    """Send ``task`` for each id once this session's transaction commits; never if it rolls
    back. The session must come from ``app.db.session_scope``, which runs the sends.
    ``handover``: conversions sent again for a dead worker, which go ahead of the queue."""
    if not ids:
        return
    pending: list[Send] | None = session.info.get(PENDING_SENDS)
    if pending is None:
        # A session nobody will flush would drop the work silently: refuse it loudly instead.
        raise RuntimeError("queue_after_commit needs a session from app.db.session_scope")
    pending.append(Send(task, ids, countdown, handover))


# What a lost send is logged as: the event names the kind of thing left waiting, the field
# its ids.
_SEND_FAILED = {
    INGEST_TASK: ("job.enqueue_failed", "job_id"),
    ARCHIVE_TASK: ("job.enqueue_failed", "job_id"),
    CONVERT_TASK: ("file.enqueue_failed", "file_ids"),
    WEBHOOK_TASK: ("webhook.enqueue_failed", "delivery_id"),
}


def _send(send: Send) -> None:
    # The module's functions are looked up at each call, so a test's fake sender is the one used.
    if send.task == CONVERT_TASK:
        (send_handovers if send.handover else send_conversions)(send.ids)
        return
    for one in send.ids:
        if send.task == INGEST_TASK:
            send_ingest(one)
        elif send.task == ARCHIVE_TASK:
            send_archive(one)
        elif send.task == WEBHOOK_TASK:
            send_webhook(one, countdown=send.countdown)
        else:
            get_sender().send_task(send.task, args=[one], countdown=send.countdown)


def send_all(sends: Iterable[Send]) -> None:
    """Send what a committed transaction queued; a failed send is logged, never raised.

    The transaction cannot be undone any more, so failing the request or the task for it would
    only hide that the work was accepted. The sweeper finds what was not sent: jobs and files
    left PENDING, archives claimed and not started, webhook deliveries due."""
    for send in sends:
        try:
            _send(send)
        except Exception:
            event, key = _SEND_FAILED.get(send.task, ("task.enqueue_failed", "ids"))
            log.warning(
                event, exc_info=True, extra={"task": send.task}, **{key: ",".join(send.ids)}
            )


def send_now(task: str, *ids: str, countdown: float | None = None) -> None:
    """Send at once, under the same policy, for a caller whose transaction has already
    committed outside ``session_scope``'s reach; prefer ``queue_after_commit``."""
    if ids:
        send_all([Send(task, ids, countdown)])


def queued_conversions() -> int:
    """Messages waiting in the conversion queue (not counting those being worked on)."""
    with get_sender().connection_for_write() as connection:
        channel: Any = connection.default_channel  # a kombu virtual channel (Redis)
        try:
            return int(channel.queue_declare(CONVERT_QUEUE, passive=True).message_count)
        except ChannelError:  # Redis drops an empty queue's key: nothing is waiting
            return 0


def queued_conversion_ids() -> set[str]:
    """The file ids of the conversion messages waiting in the broker's lists, at every priority.
    The scheduler keeps these lists short (its window, app/scheduling.py): reading them whole
    is cheap."""
    return {one for task, one in queued_tasks(CONVERT_QUEUE) if task == CONVERT_TASK}


def queued_ingest_ids() -> set[str]:
    """The job ids of the ingest messages waiting in the control queue (short: ingests,
    archives, sweeps and webhook attempts, each taken at once by the next free process)."""
    return {one for task, one in queued_tasks(CONTROL_QUEUE) if task == INGEST_TASK}


def queued_tasks(queue_name: str) -> set[tuple[str, str]]:
    """(task name, id) of the LEASED_TASKS messages waiting in ``queue_name``'s lists. kombu's
    Redis transport keeps one list per priority step; each element is the message as JSON
    (Celery's protocol 2, as ``_leased_task`` reads it)."""
    with get_sender().connection_for_write() as connection:
        channel: Any = connection.default_channel  # a kombu Redis channel
        client = channel.client
        with client.pipeline() as pipe:
            for priority in channel.priority_steps:
                pipe.lrange(channel._q_for_pri(queue_name, priority), 0, -1)
            lists = pipe.execute()
    queued = set()
    for raw in (element for elements in lists for element in elements):
        task = _task_of(raw)
        if task is not None:
            queued.add(task)
    return queued


# The tasks a worker holds a lease for (``workers.leases``): each takes one id, a file's or a job's.
LEASED_TASKS = (CONVERT_TASK, INGEST_TASK, ARCHIVE_TASK)


def unacked_conversions(delivered_before: float, limit: int = 10_000) -> list[str]:
    """The file ids of conversion messages delivered before ``delivered_before`` and still not
    acknowledged (``unacked_tasks``)."""
    return [one for task, one in unacked_tasks(delivered_before, limit) if task == CONVERT_TASK]


def unacked_tasks(delivered_before: float, limit: int = 10_000) -> list[tuple[str, str]]:
    """(task name, id) of the conversion, ingest and archive messages delivered to a worker
    before ``delivered_before`` (a Unix time) and still not acknowledged.

    This reads the layout of kombu's Redis transport (kombu/transport/redis.py, ``QoS.append``):
    a message handed to a consumer goes into the hash ``unacked`` (delivery tag -> JSON
    ``[payload, exchange, routing_key]``) and the sorted set ``unacked_index`` (delivery tag,
    scored by the Unix time of the delivery), and leaves both when acknowledged. A consumer
    that was killed leaves its messages there until the visibility timeout (hours); the
    sweeper re-sends those whose file or job no live lease covers. The payload is Celery's
    message protocol 2: the task name in ``headers["task"]``, the body ``[args, kwargs, embed]``,
    JSON, base64-encoded when ``properties["body_encoding"]`` says so. Anything else found
    there (another task, another layout) is skipped, never guessed at.
    """
    with get_sender().connection_for_write() as connection:
        channel: Any = connection.default_channel  # a kombu Redis channel
        client = channel.client
        tags = client.zrangebyscore(
            channel.unacked_index_key, "-inf", delivered_before, start=0, num=limit
        )
        if not tags:
            return []
        stored = client.hmget(channel.unacked_key, tags)
    held = []
    for raw in stored:
        task = _leased_task(raw)
        if task is not None:
            held.append(task)
    return held


def _leased_task(raw: bytes | str | None) -> tuple[str, str] | None:
    """(task name, id) of one stored ``[payload, exchange, routing_key]``, if it is one of the
    LEASED_TASKS."""
    if raw is None:
        return None  # acknowledged between the two reads
    try:
        return _task_of(json.loads(raw)[0])
    except (ValueError, KeyError, IndexError, TypeError):
        log.warning("queue.unacked_unreadable")
        return None


def _task_of(payload: Any) -> tuple[str, str] | None:
    """(task name, id) of one message (a dict, or its JSON), if it is one of the LEASED_TASKS."""
    try:
        if isinstance(payload, (bytes, str)):
            payload = json.loads(payload)
        task = payload["headers"]["task"]
        if task not in LEASED_TASKS:
            return None
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, KeyError, IndexError, TypeError):
        log.warning("queue.message_unreadable")
        return None
    if not args or not isinstance(args[0], str):
        return None
    return task, args[0]
