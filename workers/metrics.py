"""The worker's events, as metrics (``app.metrics`` records them in Redis and serves them).

Each function is one round trip to Redis at most and never raises, so the code that calls
it needs no guard.
"""

from __future__ import annotations

from app import metrics
from workers.libreoffice.errors import (
    ConversionError,
    ConversionTimeout,
    ConverterCrashed,
    ConverterMisconfigured,
)
from workers.validation import InvalidDocument

# Most specific first: every LibreOffice error is a ConversionError.
REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidDocument, "invalid_document"),
    (ConversionTimeout, "timeout"),
    (ConverterCrashed, "crashed"),
    (ConverterMisconfigured, "misconfigured"),
    (ConversionError, "libreoffice_refused"),
)


def failure_reason(error: BaseException) -> str:
    """A small, fixed set of reasons (label values), whatever the message says."""
    return next((name for kind, name in REASONS if isinstance(error, kind)), "other")


def conversion_finished(seconds: float, failure: str | None) -> None:
    """A file reached COMPLETED (``failure`` None) or FAILED for the reason ``failure``."""
    outcome = "failed" if failure else "completed"
    updates = [
        metrics.inc(metrics.CONVERSIONS, outcome),
        metrics.observe(metrics.CONVERSION_DURATION, seconds, outcome),
    ]
    if failure:
        updates.append(metrics.inc(metrics.CONVERSION_FAILURES, failure))
    metrics.record(*updates)


def files_failed(reason: str, count: int = 1) -> None:
    """Files failed outside a conversion (attempts spent, task gave up): no duration."""
    if count > 0:
        metrics.record(
            metrics.inc(metrics.CONVERSIONS, "failed", count),
            metrics.inc(metrics.CONVERSION_FAILURES, reason, count),
        )


def libreoffice_restarted(recycled: bool) -> None:
    metrics.record(
        metrics.inc(metrics.LIBREOFFICE_RESTARTS, "recycled" if recycled else "replaced")
    )


def libreoffice_timed_out() -> None:
    metrics.record(metrics.inc(metrics.LIBREOFFICE_TIMEOUTS))


def archive_written(size: int, seconds: float) -> None:
    metrics.record(
        metrics.observe(metrics.ARCHIVE_BYTES, size),
        metrics.observe(metrics.ARCHIVE_DURATION, seconds),
    )


def task_retried(task: str) -> None:
    metrics.record(metrics.inc(metrics.TASK_RETRIES, task))


def task_gave_up(task: str) -> None:
    metrics.record(metrics.inc(metrics.TASK_FAILURES, task))
