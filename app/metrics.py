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
from sqlalchemy.orm import Session

from app import queue, scheduling
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
    "missing_fonts",  # strict_fonts, and the document asks for a font nothing could replace
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


# The label of the jobs of a server without API keys (their owner is ""): an empty label value
# is the same as no label to Prometheus.
ANONYMOUS_KEY = "anonymous"
# Hex digits of the owner's digest (sha256 of the API key) a per-key series is labelled with:
# enough to tell a deployment's keys apart, and never the key itself.
KEY_PREFIX = 8


def key_label(owner: str) -> str:
    return owner[:KEY_PREFIX] if owner else ANONYMOUS_KEY


@dataclass(frozen=True)
class DatabaseFigures:
    jobs: dict[str, int]  # by status
    files: dict[str, int]  # by status
    waiting: int  # scheduling.waiting_files, in total
    in_flight: int
    # Per key label, only the keys with files waiting or in flight.
    key_waiting: dict[str, int]
    key_in_flight: dict[str, int]


def _by_key(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    labelled: dict[str, int] = {}
    for owner, count in counts:
        # Two keys whose digests share a prefix are added up: one series, still bounded.
        label = key_label(owner)
        labelled[label] = labelled.get(label, 0) + count
    return labelled


def _database_figures() -> DatabaseFigures:
    # One GROUP BY per table: index-only on (status, ...) indexes, whatever the number of rows;
    # the scheduler's figures read the in-flight rows (a window's worth, ix_files_dispatched)
    # and the waiting ones (ix_files_job_waiting).
    with Session(get_engine()) as session:
        jobs = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        files = dict(session.execute(select(File.status, func.count()).group_by(File.status)).all())
        # scheduling.waiting_files's count, per key: their sum is the total, one scan fewer
        # (a scan of every waiting file: 13 ms for 25,000 on PostgreSQL).
        key_waiting = scheduling.waiting_by_owner(session)
        flying = scheduling.in_flight(session)
    return DatabaseFigures(
        jobs={str(getattr(k, "value", k)): int(v) for k, v in jobs.items()},
        files={str(getattr(k, "value", k)): int(v) for k, v in files.items()},
        waiting=sum(key_waiting.values()),
        in_flight=sum(one.count for one in flying),
        key_waiting=_by_key(key_waiting.items()),
        key_in_flight=_by_key((one.owner, one.count) for one in flying),
    )


class _CountsCache:
    """The last database figures, per database, for DATABASE_CACHE_SECONDS."""

    def __init__(self) -> None:
        # Held across the query: concurrent scrapes wait for one query instead of each running
        # their own.
        self._lock = threading.Lock()
        self._entry: tuple[str, float, DatabaseFigures] | None = None

    def get(self) -> DatabaseFigures:
        url = get_settings().resolved_database_url
        with self._lock:
            entry = self._entry
            if (
                entry is not None
                and entry[0] == url
                and time.monotonic() - entry[1] < DATABASE_CACHE_SECONDS
            ):
                return entry[2]
            figures = _database_figures()  # a failure is not cached: the next scrape tries again
            self._entry = (url, time.monotonic(), figures)
            return figures


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
            figures = _counts_cache.get()
        except Exception as error:  # noqa: BLE001 - a scrape reports the outage, never a 500
            log.warning("metrics.database_unreadable", error=error)
            up.add_metric(["database"], 0.0)
        else:
            up.add_metric(["database"], 1.0)
            yield _by_status("quire_jobs", "Jobs by status.", JobStatus, figures.jobs)
            yield _by_status("quire_files", "Files by status.", FileStatus, figures.files)
            yield from _scheduler_families(figures)
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


def _scheduler_families(figures: DatabaseFigures) -> Iterator[Metric]:
    """The scheduler's figures (app/scheduling.py): what waits in the database for its turn,
    and what is in flight, in total and per key. The broker's list holds only the window, so
    its length no longer tells how much work waits: these do."""
    yield GaugeMetricFamily(
        "quire_files_waiting",
        "Files of active jobs not sent to a worker yet: waiting their turn, or not copied out "
        "of the upload yet.",
        value=float(figures.waiting),
    )
    yield GaugeMetricFamily(
        "quire_files_in_flight",
        "Conversions sent to the workers and not finished (the scheduler's window in use).",
        value=float(figures.in_flight),
    )
    keys = sorted(set(figures.key_waiting) | set(figures.key_in_flight))
    for name, help_text, counts in (
        (
            "quire_key_files_waiting",
            "quire_files_waiting per API key (the first 8 hex digits of the key's SHA-256, "
            f"or {ANONYMOUS_KEY} without API keys); only keys with work appear.",
            figures.key_waiting,
        ),
        (
            "quire_key_files_in_flight",
            "quire_files_in_flight per API key (labelled as quire_key_files_waiting).",
            figures.key_in_flight,
        ),
    ):
        gauge = GaugeMetricFamily(name, help_text, labels=["key"])
        for key in keys:
            gauge.add_metric([key], float(counts.get(key, 0)))
        yield gauge


def _by_status(
    name: str, help_text: str, statuses: Iterable[Any], counts: dict[str, int]
) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, help_text, labels=["status"])
    known = [str(status.value) for status in statuses]
    for status in [*known, *sorted(set(counts) - set(known))]:
        gauge.add_metric([status], float(counts.get(status, 0)))
    return gauge
