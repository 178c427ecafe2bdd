"""The worker's Celery app, built from the same configuration the API sends with."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from app.config import get_settings
from app.logs import configure_logging
from app.queue import make_celery
from workers.runtime import close_converter

celery = make_celery()
celery.conf.include = ["workers.tasks"]

# Celery logs two lines per task (received, succeeded); Quire logs one line per file itself,
# with its ids. Task failures and retries are still logged (at WARNING and above).
for _name in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@worker_process_init.connect
def _process_init(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@worker_process_shutdown.connect
def _process_shutdown(**_: Any) -> None:
    close_converter()
