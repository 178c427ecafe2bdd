"""``GET /api/v1/jobs/{job_id}/events``: live progress as server-sent events.

One ``file`` event each time a file changes state, a ``progress`` event when the counts change,
and one ``job`` event when the job ends, after which the stream closes. Clients need not poll;
the status endpoint keeps working for those that do.

Each open stream holds a connection and asks the database twice a second, so each caller may
hold at most QUIRE_MAX_EVENT_STREAMS_PER_KEY of them at once (429 past it): counted per API key,
or, on a server without keys, per client address. The count is per API process.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from app.api.deps import BaseUrlDep, OwnerDep, SettingsDep, caller, visible_job
from app.api.errors import ApiError, responses
from app.db import session_scope
from app.jobs import files_touched_since, status_counts
from app.models import TERMINAL_FILE_STATUSES, TERMINAL_JOB_STATUSES, FileStatus, Job
from app.status import archive_url

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(caller)])
POLL_SECONDS = 0.5  # how often the database is asked for changes, per open stream
HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream
# touched_at is stamped when a worker's transaction starts, not when it commits, so a change may
# become visible with a stamp a little older than one already read: read back this far again
# (repeats are filtered out by what was already sent).
OVERLAP = timedelta(seconds=60)
# A refused stream may be asked for again this much later (the Retry-After of the 429).
RETRY_AFTER_SECONDS = 5


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _progress(counts: dict[FileStatus, int]) -> dict[str, Any]:
    total = sum(counts.values())
    finished = sum(counts.get(status, 0) for status in TERMINAL_FILE_STATUSES)
    return {
        "total": total,
        **{status.value.lower(): counts.get(status, 0) for status in FileStatus},
        "percent": round(100 * finished / total, 1) if total else 100.0,
    }


class _Watch:
    """What one stream has told its client so far, and the reading of what changed."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.since: datetime | None = None
        self.sent: dict[str, FileStatus] = {}
        self.progress: dict[str, Any] | None = None

    def read(self, base: str) -> tuple[list[bytes], bool]:
        """The events due now, and whether the job has ended (or is gone)."""
        events: list[bytes] = []
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return [_event("error", {"message": "The job no longer exists."})], True
            ended = job.status in TERMINAL_JOB_STATUSES
            # The last reading before the end reads every file, so none can be missed.
            since = None if ended or self.since is None else self.since - OVERLAP
            for file_id, filename, status, error, touched in files_touched_since(
                session, self.job_id, since
            ):
                self.since = touched  # ordered by touched_at: the last row is the newest
                if self.sent.get(file_id, FileStatus.PENDING) != status:
                    self.sent[file_id] = status
                    events.append(
                        _event(
                            "file",
                            {
                                "file_id": file_id,
                                "filename": filename,
                                "status": status.value,
                                "error_message": error,
                            },
                        )
                    )
            progress = _progress(status_counts(session, self.job_id))
            if progress != self.progress:
                self.progress = progress
                events.append(_event("progress", progress))
            if ended:
                download = archive_url(base, job)
                events.append(
                    _event(
                        "job",
                        {
                            "job_id": job.id,
                            "status": job.status.value,
                            "download_url": download,
                            "error_message": job.error_message,
                            "progress": progress,
                        },
                    )
                )
                return events, True
        return events, False


class StreamSlots:
    """Open event streams per caller, in this process. Only the event loop's thread touches it
    (the route and the response run there), so it needs no lock."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def take(self, caller_key: str, limit: int) -> Callable[[], None] | None:
        """A slot for one more stream, and the function that gives it back (once, however
        often it is called); None when the caller already holds ``limit``."""
        if self.open[caller_key] >= limit:
            return None
        self.open[caller_key] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.open[caller_key] -= 1
                if not self.open[caller_key]:
                    del self.open[caller_key]  # no entry left behind per address ever seen

        return give_back


def _slots(request: Request) -> StreamSlots:
    slots: StreamSlots | None = getattr(request.app.state, "event_streams", None)
    if slots is None:
        slots = request.app.state.event_streams = StreamSlots()
    return slots


def _caller_key(request: Request, owner: str) -> str:
    # With API keys, the key (its digest) is the caller. Without, every client is anonymous and
    # one global count would let a single client starve the rest: count per address instead.
    # Behind a proxy that is the proxy's address unless uvicorn is told to trust its forwarded
    # headers (--proxy-headers, --forwarded-allow-ips).
    if owner:
        return f"key:{owner}"
    return f"address:{request.client.host if request.client else 'unknown'}"


class _HeldStream(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends: the job ended, the
    client went away (Starlette cancels the stream when it reads the disconnect), or an error.
    Here rather than in the generator: a generator left suspended at a ``yield`` when its
    task is cancelled is only closed when it is garbage collected."""

    def __init__(self, content: AsyncIterator[bytes], give_back: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.give_back()


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(401, 403, 404, 429),
        200: {"content": {"text/event-stream": {}}, "description": "file, progress, job events"},
    },
    summary="Live progress of a job as server-sent events",
)
async def job_events(
    job_id: str, request: Request, base: BaseUrlDep, owner: OwnerDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-sent events until the job ends. At most QUIRE_MAX_EVENT_STREAMS_PER_KEY streams
    may be open at once per API key (per client address without keys); past that, 429."""

    def visible() -> str:
        # Its own short session: a stream may stay open for hours and must not hold one.
        with session_scope() as session:
            return visible_job(session, job_id, owner).id

    watch = _Watch(await run_in_threadpool(visible))
    limit = settings.max_event_streams_per_key
    give_back = _slots(request).take(_caller_key(request, owner), limit)
    if give_back is None:
        raise ApiError(
            429,
            f"Too many open event streams: at most {limit} at once per API key (per client "
            "address on a server without keys). Close one, or poll "
            f"GET /api/v1/jobs/{watch.job_id} instead.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def stream() -> AsyncIterator[bytes]:
        quiet = 0.0
        while True:
            events, ended = await run_in_threadpool(watch.read, base)
            for event in events:
                yield event
            if ended:
                return
            quiet = 0.0 if events else quiet + POLL_SECONDS
            if quiet >= HEARTBEAT_SECONDS:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return _HeldStream(stream(), give_back)
