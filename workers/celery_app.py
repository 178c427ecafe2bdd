"""The worker's Celery app, built from the same configuration the API sends with."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    task_received,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from app.config import check_before_start, get_settings
from app.logs import bind_task_ids, clear_ids, configure_logging, get_logger
from app.queue import CONVERT_QUEUE, make_celery
from app.tracing import instrument_worker, shutdown_tracing
from workers import leases
from workers.runtime import announce_sandbox, close_converter

log = get_logger("quire.worker")

celery = make_celery()
celery.conf.include = ["workers.tasks"]

# Celery logs two lines per task (received, succeeded); Quire logs one line per file itself,
# with its ids. Task failures and retries are still logged (at WARNING and above).
for _name in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# Connected, this makes Celery leave logging alone: its main process (and beat) then log in
# QUIRE_LOG_FORMAT too, and forked children do not get Celery's handler beside Quire's.
@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(get_settings().log_level, get_settings().log_format)


# Once per worker, before its pool starts: the start-up refusals (check_before_start raises
# SystemExit, which Celery's signal dispatch lets through), then whether LibreOffice can be
# sandboxed here. The pool processes fork after it and inherit a successful check.
@worker_init.connect
def _worker_init(**_: Any) -> None:
    settings = get_settings()
    check_before_start(settings)
    if settings.database_is_shared and not settings.public_url:
        # A worker has no request to take the API's address from (workers/webhooks.py).
        log.warning(
            "webhooks.local_links",
            "QUIRE_PUBLIC_URL is not set: the links in webhook bodies (status_url, and the "
            "local store's download_url) name this worker's own HOST:PORT, which no receiver "
            "on another host can reach; set it to the address clients use for the API",
        )
    announce_sandbox(settings)


# Beat signs nothing itself, but it is a host of the same deployment: it refuses alike, so a
# missing key shows on every process an operator starts, not only on those that sign.
@beat_init.connect
def _beat_init(**_: Any) -> None:
    check_before_start(get_settings())


# The lease heartbeat runs in the main process, which holds the messages; worker_ready comes
# after the pool forked, so no pool child inherits the thread or its database connection.
@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    leases.start(get_settings(), _registration(sender))


def _registration(consumer: Any) -> leases.Registration | None:
    """This worker's entry in the registry the scheduler sizes its window from: its name and
    pool size, if it takes conversions (a worker started with only -Q quire-control does not)."""
    queues = getattr(getattr(consumer, "task_consumer", None), "queues", None) or []
    if queues and CONVERT_QUEUE not in {queue.name for queue in queues}:
        return None
    slots = getattr(getattr(consumer, "pool", None), "num_processes", None)
    return leases.Registration(
        name=str(getattr(consumer, "hostname", None) or socket.gethostname()),
        slots=int(slots or get_settings().worker_concurrency),
    )


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    leases.stop()


@task_received.connect
def _lease_received(request: Any = None, **_: Any) -> None:
    leases.received(request)


@worker_process_init.connect
def _process_init(**_: Any) -> None:
    configure_logging(get_settings().log_level, get_settings().log_format)
    # After the fork: the span exporter's thread is started in the process that uses it.
    instrument_worker(get_settings())


# Every line logged while a task runs carries the job or file id it was given.
@task_prerun.connect
def _bind_ids(task: Any = None, args: Any = None, **_: Any) -> None:
    bind_task_ids(getattr(task, "name", ""), args)


@task_postrun.connect
def _clear_ids(**_: Any) -> None:
    clear_ids()


@worker_process_shutdown.connect
def _process_shutdown(**_: Any) -> None:
    close_converter()
    shutdown_tracing()  # export the spans still queued before the process ends
