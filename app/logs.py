"""Log set-up shared by the API and the workers: one line per event, dotted event names.

Code logs an event and its fields through ``get_logger``, never by formatting them into a
string::

    log = get_logger("quire.convert")
    log.info("file.completed", job_id=job_id, file_id=file_id, error=None)

The fields travel on the log record as they were passed (``record.event``, ``record.fields``),
and each format renders them at the edge. ``QUIRE_LOG_FORMAT=json`` (the default) writes one
JSON object per line, so that a log shipper (Loki, Elasticsearch, CloudWatch, ``jq``) can
filter on fields instead of parsing text::

    {"timestamp": "2026-11-30T06:01:02.345Z", "level": "INFO", "logger": "quire.convert",
     "event": "file.completed", "message": "file.completed job_id=... file_id=... error=None",
     "job_id": "...", "file_id": "...", "error": null}

Numbers stay numbers; what JSON has no type for is written as its ``str()``. The job and file
ids bound to the context are fields too: a Celery task binds them from its arguments
(``workers.celery_app``), the API from the request's path, so every line logged while handling
a job or a file carries its ids, whoever logs it. ``text`` writes the message (the event, then
its fields as ``key=value``), with the bound ids appended, for reading in a terminal.

Records logged through the standard library directly (uvicorn, Celery, a third-party library)
have no event and no fields, but what they pass in ``extra=``; uvicorn's access lines, whose
arguments are structured already, get named fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

# The ids bound to what this task or request is handling; None when it handles none.
JOB_ID: ContextVar[str | None] = ContextVar("quire_job_id", default=None)
FILE_ID: ContextVar[str | None] = ContextVar("quire_file_id", default=None)

# Attributes every LogRecord has: whatever else a record carries came from ``extra=``
# (but uvicorn's color_message, the message again with terminal escapes, and what
# ``EventLogger`` and ``ContextFilter`` set, rendered on their own).
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
    | {"event", "fields", "job_id", "file_id"}
)
# Access-log records from uvicorn, as named fields instead of one formatted string.
UVICORN_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
JOB_PATH = re.compile(r"^/api/v1/jobs/([0-9A-Fa-f-]{36})(?:/|$)")


# -- context -------------------------------------------------------------------------------


def bind_ids(job_id: str | None = None, file_id: str | None = None) -> None:
    """Bind ids to every line logged from here on in this context (task, request, thread)."""
    if job_id is not None:
        JOB_ID.set(job_id)
    if file_id is not None:
        FILE_ID.set(file_id)


def clear_ids() -> None:
    JOB_ID.set(None)
    FILE_ID.set(None)


def bind_task_ids(task_name: str, args: Sequence[Any] | None) -> None:
    """Bind the ids a Celery task was given: tasks take one id, the task's name says which."""
    from app import queue  # here, not at the top: app.queue imports Celery, logs need not

    clear_ids()
    if not args or not isinstance(args[0], str):
        return
    if task_name == queue.CONVERT_TASK:
        bind_ids(file_id=args[0])
    elif task_name in (queue.INGEST_TASK, queue.ARCHIVE_TASK):
        bind_ids(job_id=args[0])


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JobIdMiddleware:
    """Binds the job id of ``/api/v1/jobs/{id}...`` requests to the lines logged for them.

    Pure ASGI (no BaseHTTPMiddleware, which would buffer streamed answers such as the event
    stream). It reads the id from the path before routing; an id that names no job is bound
    all the same, which is what a reader of the logs wants to grep for.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = JOB_PATH.match(scope.get("path", ""))
        job_token = JOB_ID.set(match.group(1).lower() if match else None)
        file_token = FILE_ID.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            JOB_ID.reset(job_token)
            FILE_ID.reset(file_token)


# -- logging events --------------------------------------------------------------------------


class EventLogger:
    """A logger taking an event's dotted name and its fields, over a standard library logger.

    ``log.warning("task.retry", name=..., retries=2, error=error)`` logs the record's message
    ``task.retry name=quire.convert retries=2 error=ConnectionError('refused')`` and carries
    the event and the fields themselves for the formatters. In the message a string field
    stands as it is and any other value as its ``repr()`` (an exception's repr names its
    class). An optional ``note``, free text for a reader, ends the message and is no field.
    ``extra=`` sets record attributes, as in the standard library: fields the JSON line has
    and the message does not. ``exc_info`` and ``extra`` are therefore no field names.
    """

    __slots__ = ("logger",)

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def debug(
        self,
        event: str,
        note: str | None = None,
        /,
        *,
        exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._log(logging.DEBUG, event, note, fields, exc_info, extra)

    def info(
        self,
        event: str,
        note: str | None = None,
        /,
        *,
        exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._log(logging.INFO, event, note, fields, exc_info, extra)

    def warning(
        self,
        event: str,
        note: str | None = None,
        /,
        *,
        exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._log(logging.WARNING, event, note, fields, exc_info, extra)

    def error(
        self,
        event: str,
        note: str | None = None,
        /,
        *,
        exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._log(logging.ERROR, event, note, fields, exc_info, extra)

    def exception(
        self,
        event: str,
        note: str | None = None,
        /,
        *,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """An ERROR with the exception being handled."""
        self._log(logging.ERROR, event, note, fields, True, extra)

    def _log(
        self,
        level: int,
        event: str,
        note: str | None,
        fields: dict[str, Any],
        exc_info: bool,
        extra: Mapping[str, Any] | None,
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        # The message is a %-template and its arguments, as a hand-written call would pass
        # them: formatted only if a handler writes it, and a value is never read as template.
        parts = [
            f"{key}=%s" if isinstance(value, str) else f"{key}=%r" for key, value in fields.items()
        ]
        args: list[Any] = list(fields.values())
        if note is not None:
            parts.append("%s")
            args.append(note)
        template = " ".join([event.replace("%", "%%"), *parts]) if args else event
        self.logger.log(
            level,
            template,
            *args,
            exc_info=exc_info,
            extra={**(extra or {}), "event": event, "fields": fields},
            # The caller's line, not this module's: past _log and the method that called it.
            stacklevel=3,
        )


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


# -- formatting ----------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (on the handler, so every logger gets them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = JOB_ID.get()
        record.file_id = FILE_ID.get()
        return True


def _event(record: logging.LogRecord) -> str | None:
    event = getattr(record, "event", None)
    return event if isinstance(event, str) else None


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": _event(record),
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line["event"] = "http.request"
            line |= dict(zip(UVICORN_ACCESS_FIELDS, record.args, strict=False))
        line |= _fields(record)
        line |= {
            key: value
            for key, value in vars(record).items()
            if key not in STANDARD_ATTRIBUTES and not key.startswith("_")
        }
        # The bound ids win over nothing but themselves: an event naming another job keeps it.
        for key in ("job_id", "file_id"):
            bound = getattr(record, key, None)
            if bound is not None:
                line.setdefault(key, bound)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps({key: _json_safe(value) for key, value in line.items()})


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        bound = [
            f"{key}={value}"
            for key in ("job_id", "file_id")
            if (value := getattr(record, key, None)) is not None and key not in fields
        ]
        return f"{text} [{' '.join(bound)}]" if bound else text


def configure_logging(
    level: str, log_format: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """One handler on the root logger, in the chosen format; safe to call again (it replaces
    only the handler it installed, never another one, such as pytest's capture)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "quire", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.quire = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn gives its loggers their own text handlers: route them through this one instead,
    # so that a container's output is all in one format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
