"""Operational metrics: recorded by every process into Redis, read by the API at scrape time.

The API and the workers are separate processes (separate containers under compose), and each
worker process converts only its share, so a per-process registry would show a fraction of
the truth, and lose it at every restart. Instead each event is a few hash increments, sent in
one pipeline to the Redis every process already shares (the broker), and ``GET /metrics``
reads them back, with the job and file counts from the database and the queue depths from
Redis, when Prometheus scrapes. All the figures are the whole deployment's: scrape any API.

Recording never fails the work it measures: an unreachable Redis is given up on within a
quarter of a second, the figure is lost, and recording pauses for a few seconds.

Layout: one hash, ``quire:metrics``. A counter is the field ``name|label``; a histogram is
``name|label|le=BOUND`` (observations whose smallest bucket is BOUND, not cumulative, so that
one observation is one increment), ``name|label|sum`` and ``name|label|count``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from app import queue
from app.config import get_settings
from app.db import get_engine
from app.logs import get_logger
from app.models import File, FileStatus, Job, JobStatus

log = get_logger("quire.metrics")

KEY = "quire:metrics"
# Recording sits on the conversion path: wait for Redis this long at most, then skip it
# (and skip recording for PAUSE seconds, so an outage costs one timeout, not one per file).
TIMEOUT = 0.25
PAUSE = 5.0
# The job and file counts are a GROUP BY over every row: scrapes within this many seconds of
# the last query share its answer, so many scrapers (or one scraping too often) cost one query.
DATABASE_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Definition:
    name: str  # a counter's name without its _total suffix (prometheus_client adds it)
    kind: Literal["counter", "histogram"]
    help: str
    label: str | None = None
    # The label's known values, shown as 0 before anything happened, so that rate() and
    # alerts see a series from the first scrape instead of from the first event.
    values: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


OUTCOMES = ("completed", "failed")
FAILURE_REASONS = (
    "invalid_document",  # refused by validation: not a DOCX package, damaged, encrypted, ...
    "timeout",  # LibreOffice killed at QUIRE_CONVERSION_TIMEOUT, twice
    "crashed",  # LibreOffice died converting it, twice
    "libreoffice_refused",  # LibreOffice could not load or export it, or wrote no PDF
    "misconfigured",  # the instance runs without its safety settings: an installation problem
    "missing_input",  # its DOCX is no longer in the store
    "attempts_exhausted",  # QUIRE_MAX_ATTEMPTS conversions started and never finished
    "gave_up",  # the task's retries were spent on transient errors, or it hit its time limit
)
TASKS = (queue.INGEST_TASK, queue.CONVERT_TASK, queue.ARCHIVE_TASK)
SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BYTES = (1e5, 1e6, 1e7, 1e8, 1e9, 1e10)

CONVERSIONS = Definition(
    "quire_conversions",
    "counter",
    "Files whose conversion ended in a worker, by outcome (completed or failed).",
    label="outcome",
    values=OUTCOMES,
)
CONVERSION_FAILURES = Definition(
    "quire_conversion_failures",
    "counter",
    "Files that failed in a worker, by reason: " + ", ".join(FAILURE_REASONS) + ".",
    label="reason",
    values=FAILURE_REASONS,
)
CONVERSION_DURATION = Definition(
    "quire_conversion_duration_seconds",
    "histogram",
    "Time a worker spent on one file (fetch, validation, LibreOffice, upload), by outcome.",
    label="outcome",
    values=OUTCOMES,
    buckets=SECONDS,
)
LIBREOFFICE_RESTARTS = Definition(
    "quire_libreoffice_restarts",
    "counter",
    "LibreOffice instances started again: recycled (every QUIRE_LIBREOFFICE_RESTART_AFTER "
    "conversions) or replaced (after a crash, a timeout or a failed start).",
    label="reason",
    values=("recycled", "replaced"),
)
LIBREOFFICE_TIMEOUTS = Definition(
    "quire_libreoffice_timeouts",
    "counter",
    "Conversions stopped at QUIRE_CONVERSION_TIMEOUT (their LibreOffice was killed).",
)
ARCHIVE_BYTES = Definition(
    "quire_archive_bytes", "histogram", "Size of the result archives written.", buckets=BYTES
)
ARCHIVE_DURATION = Definition(
    "quire_archive_duration_seconds",
    "histogram",
    "Time taken to stream one result archive into the store.",
    buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
TASK_RETRIES = Definition(
    "quire_task_retries",
    "counter",
    "Celery tasks retried after a transient error (database, broker, store, scratch), by task.",
    label="task",
    values=TASKS,
)
TASK_FAILURES = Definition(
    "quire_task_failures",
    "counter",
    "Celery tasks that gave up (retries spent or time limit hit) and failed their file or job.",
    label="task",
    values=TASKS,
)
RECORDED = (
    CONVERSIONS,
    CONVERSION_FAILURES,
    CONVERSION_DURATION,
    LIBREOFFICE_RESTARTS,
    LIBREOFFICE_TIMEOUTS,
    ARCHIVE_BYTES,
    ARCHIVE_DURATION,
    TASK_RETRIES,
    TASK_FAILURES,
)

# -- recording -----------------------------------------------------------------------------

# One hash update: (field, amount); an integer amount is HINCRBY, a float HINCRBYFLOAT.
Update = tuple[str, int | float]


def _field(metric: Definition, label: str, *suffix: str) -> str:
    if "|" in label:
        raise ValueError(f"a metric label may not contain '|': {label!r}")
    if (metric.label is None) != (label == ""):
        raise ValueError(f"{metric.name} takes {'no label' if metric.label is None else 'one'}")
    return "|".join((metric.name, label, *suffix))


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def inc(metric: Definition, label: str = "", amount: int = 1) -> list[Update]:
    assert metric.kind == "counter", metric.name
    return [(_field(metric, label), amount)]


def observe(metric: Definition, value: float, label: str = "") -> list[Update]:
    assert metric.kind == "histogram", metric.name
    bucket = next((bound for bound in metric.buckets if value <= bound), math.inf)
    return [
        (_field(metric, label, f"le={_bound(bucket)}"), 1),
        (_field(metric, label, "sum"), float(value)),
        (_field(metric, label, "count"), 1),
    ]


class _Connection:
    """This process's Redis client for metrics (made again after a fork), and its pause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: tuple[int, str, redis.Redis] | None = None
        self.paused_until = 0.0

    def client(self) -> redis.Redis | None:
        url = get_settings().broker_url
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None  # another broker: no shared place to record in
        with self._lock:
            if self._client is None or self._client[:2] != (os.getpid(), url):
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=TIMEOUT,
                    socket_connect_timeout=TIMEOUT,
                    decode_responses=True,
                    # redis-py retries a failed command 3 times with backoff by default: on
                    # the conversion path a lost figure is cheaper than a second's wait.
                    retry=Retry(NoBackoff(), 0),
                )
                self._client = (os.getpid(), url, client)
            return self._client[2]


_connection = _Connection()


def record(*updates: Iterable[Update]) -> None:
    """Apply the updates in one round trip; never raises (a lost figure beats a failed file)."""
    if time.monotonic() < _connection.paused_until:
        return
    try:
        client = _connection.client()
        if client is None:
            return
        pipeline = client.pipeline(transaction=False)
        for group in updates:
            for field, amount in group:
                if isinstance(amount, float):
                    pipeline.hincrbyfloat(KEY, field, amount)
                else:
                    pipeline.hincrby(KEY, field, amount)
        pipeline.execute()
    except Exception as error:  # noqa: BLE001 - whatever went wrong, the work goes on
        _connection.paused_until = time.monotonic() + PAUSE
        log.warning("metrics.unrecorded", error=error)


# -- reading (GET /metrics) ----------------------------------------------------------------


def _recorded_families(values: dict[str, str]) -> Iterator[Metric]:
    by_metric: dict[str, dict[str, dict[str, float]]] = {}
    for field, raw in values.items():
        name, _, rest = field.partition("|")
        label, _, suffix = rest.partition("|")
        by_metric.setdefault(name, {}).setdefault(label, {})[suffix] = float(raw)
    for metric in RECORDED:
        series = by_metric.get(metric.name, {})
        for known in metric.values if metric.label else ("",):
            series.setdefault(known, {})
        labels = [metric.label] if metric.label else []
        if metric.kind == "counter":
            counter = CounterMetricFamily(metric.name, metric.help, labels=labels)
            for label, fields in sorted(series.items()):
                counter.add_metric([label] if labels else [], fields.get("", 0.0))
            yield counter
            continue
        histogram = HistogramMetricFamily(metric.name, metric.help, labels=labels)
        for label, fields in sorted(series.items()):
            # Stored per smallest bucket; Prometheus wants cumulative counts.
            stored = [
                (float(key[3:]), count) for key, count in fields.items() if key.startswith("le=")
            ]
            buckets = [
                (_bound(bound), sum(count for le, count in stored if le <= bound))
                for bound in (*metric.buckets, math.inf)
            ]
            histogram.add_metric(
                [label] if labels else [], buckets, sum_value=fields.get("sum", 0.0)
            )
        yield histogram


def _queue_depths(client: redis.Redis) -> tuple[dict[str, int], int]:
    """Messages waiting in each Celery queue, and messages delivered but not acknowledged."""
    # kombu keeps a Redis queue as one list per priority step: the queue's name for priority
    # 0 (all Quire sends), "<name>\x06\x16<step>" for the others (kombu.transport.redis).
    steps = (0, 3, 6, 9)
    names = (queue.CONTROL_QUEUE, queue.CONVERT_QUEUE)
    pipeline = client.pipeline(transaction=False)
    for name in names:
        for step in steps:
            pipeline.llen(f"{name}\x06\x16{step}" if step else name)
    pipeline.hlen("unacked")
    results = pipeline.execute()
    depths = {
        name: sum(int(n) for n in results[i * len(steps) : (i + 1) * len(steps)])
        for i, name in enumerate(names)
    }
    return depths, int(results[-1])


def _status_counts() -> tuple[dict[str, int], dict[str, int]]:
    # One GROUP BY per table: index-only on (status, ...) indexes, whatever the number of rows.
    with get_engine().connect() as connection:
        jobs = dict(connection.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        files = dict(
            connection.execute(select(File.status, func.count()).group_by(File.status)).all()
        )
    return (
        {str(getattr(k, "value", k)): int(v) for k, v in jobs.items()},
        {str(getattr(k, "value", k)): int(v) for k, v in files.items()},
    )


class _CountsCache:
    """The last status counts, per database, for DATABASE_CACHE_SECONDS."""

    def __init__(self) -> None:
        # Held across the query: concurrent scrapes wait for one query instead of each running
        # their own.
        self._lock = threading.Lock()
        self._entry: tuple[str, float, tuple[dict[str, int], dict[str, int]]] | None = None

    def get(self) -> tuple[dict[str, int], dict[str, int]]:
        url = get_settings().resolved_database_url
        with self._lock:
            entry = self._entry
            if (
                entry is not None
                and entry[0] == url
                and time.monotonic() - entry[1] < DATABASE_CACHE_SECONDS
            ):
                return entry[2]
            counts = _status_counts()  # a failure is not cached: the next scrape tries again
            self._entry = (url, time.monotonic(), counts)
            return counts


_counts_cache = _CountsCache()


class QuireCollector(Collector):
    """What ``GET /metrics`` shows, read fresh at each scrape."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "quire_metrics_source_up",
            "Whether the scrape could read each source of these figures (1) or not (0).",
            labels=["source"],
        )
        try:
            job_counts, file_counts = _counts_cache.get()
        except Exception as error:  # noqa: BLE001 - a scrape reports the outage, never a 500
            log.warning("metrics.database_unreadable", error=error)
            up.add_metric(["database"], 0.0)
        else:
            up.add_metric(["database"], 1.0)
            yield _by_status("quire_jobs", "Jobs by status.", JobStatus, job_counts)
            yield _by_status("quire_files", "Files by status.", FileStatus, file_counts)
        try:
            client = _connection.client()
            if client is None:
                raise RuntimeError("the broker is not Redis")
            depths, unacked = _queue_depths(client)
            recorded = {str(k): str(v) for k, v in client.hgetall(KEY).items()}
        except Exception as error:  # noqa: BLE001 - as above
            log.warning("metrics.redis_unreadable", error=error)
            up.add_metric(["redis"], 0.0)
        else:
            up.add_metric(["redis"], 1.0)
            waiting = GaugeMetricFamily(
                "quire_queue_messages",
                "Celery messages waiting in each queue (not yet delivered to a worker).",
                labels=["queue"],
            )
            for name, depth in depths.items():
                waiting.add_metric([name], float(depth))
            yield waiting
            yield GaugeMetricFamily(
                "quire_queue_unacked_messages",
                "Celery messages delivered to workers and not yet acknowledged: tasks running, "
                "prefetched, or waiting for a retry's countdown.",
                value=float(unacked),
            )
            yield from _recorded_families(recorded)
        yield up


def _by_status(
    name: str, help_text: str, statuses: Iterable[Any], counts: dict[str, int]
) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, help_text, labels=["status"])
    known = [str(status.value) for status in statuses]
    for status in [*known, *sorted(set(counts) - set(known))]:
        gauge.add_metric([status], float(counts.get(status, 0)))
    return gauge
