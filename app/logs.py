"""Log set-up shared by the API and the workers: one line per event, dotted event names.

``QUIRE_LOG_FORMAT=json`` (the default) writes one JSON object per line, so that a log shipper
(Loki, Elasticsearch, CloudWatch, ``jq``) can filter on fields instead of parsing text::

    {"timestamp": "2026-11-30T06:01:02.345Z", "level": "INFO", "logger": "quire.convert",
     "event": "file.completed", "message": "file.completed job_id=... file_id=... error=None",
     "job_id": "...", "file_id": "...", "error": null}

``event`` is the dotted name the message starts with. The message's own ``key=%s`` pairs
become fields with their values (as passed, so numbers stay numbers), and so do the job and
file ids bound to the context: a Celery task binds them from its arguments
(``workers.celery_app``), the API from the request's path, so every line logged while handling
a job or a file carries its ids, whoever logs it. ``text`` keeps the classic one-line format,
with the bound ids appended, for reading in a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

# The ids bound to what this task or request is handling; None when it handles none.
JOB_ID: ContextVar[str | None] = ContextVar("quire_job_id", default=None)
FILE_ID: ContextVar[str | None] = ContextVar("quire_file_id", default=None)

# The first word of a message when it is a dotted event name: "job.accepted", "file.failed".
EVENT = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)(?:\s|$)")
# One %-placeholder of a format string (logging's %-style), with the ``key=`` before it if any.
PLACEHOLDER = re.compile(
    r"(?:(?<![\w.])([a-z_][a-z0-9_]*)=)?%(?:\(\w+\))?[#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?"
    r"[diouxXeEfFgGcrsa%]"
)
# Attributes every LogRecord has: whatever else a record carries came from ``extra=``
# (but uvicorn's color_message, the message again with terminal escapes).
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "job_id", "file_id", "taskName", "color_message"}
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


# -- formatting ----------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (on the handler, so every logger gets them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = JOB_ID.get()
        record.file_id = FILE_ID.get()
        return True


def message_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``key=%s`` pairs of a record's format string, with the arguments they formatted."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple) or not record.args:
        return {}
    fields: dict[str, Any] = {}
    index = 0
    for match in PLACEHOLDER.finditer(record.msg):
        if match.group(0).endswith("%%"):
            continue
        if index >= len(record.args):
            break
        if match.group(1):
            fields[match.group(1)] = record.args[index]
        index += 1
    return fields


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event = EVENT.match(message)
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": event.group(1) if event else None,
            "message": message,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line["event"] = "http.request"
            line |= dict(zip(UVICORN_ACCESS_FIELDS, record.args, strict=False))
        else:
            line |= message_fields(record)
        line |= {
            key: value
            for key, value in vars(record).items()
            if key not in STANDARD_ATTRIBUTES and not key.startswith("_")
        }
        # The bound ids win over nothing but themselves: a message naming another job keeps it.
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
        message = record.getMessage()
        bound = [
            f"{key}={value}"
            for key in ("job_id", "file_id")
            if (value := getattr(record, key, None)) is not None and f"{key}=" not in message
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
