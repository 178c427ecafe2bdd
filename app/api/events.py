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
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from app.api.deps import BaseUrlDep, OwnerDep, SettingsDep, caller
from app.api.errors import ApiError, responses
from app.services.job_events import JobWatch
from app.services.jobs import visible_job_id

router = APIRouter(prefix="/api/v1/jobs", tags=["events"], dependencies=[Depends(caller)])
POLL_SECONDS = 0.5  # how often the database is asked for changes, per open stream
HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream
# A refused stream may be asked for again this much later (the Retry-After of the 429).
RETRY_AFTER_SECONDS = 5


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode()


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
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "file, progress, job events",
        },
    },
    operation_id="jobEvents",
    summary="Live progress of a job as server-sent events",
)
async def job_events(
    job_id: str, request: Request, base: BaseUrlDep, owner: OwnerDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-sent events until the job ends. At most QUIRE_MAX_EVENT_STREAMS_PER_KEY streams
    may be open at once per API key (per client address without keys); past that, 429."""

    # Its own short transaction: a stream may stay open for hours and must not hold one.
    watch = JobWatch(await run_in_threadpool(visible_job_id, job_id, owner))
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
            for name, data in events:
                yield _event(name, data)
            if ended:
                return
            quiet = 0.0 if events else quiet + POLL_SECONDS
            if quiet >= HEARTBEAT_SECONDS:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return _HeldStream(stream(), give_back)
