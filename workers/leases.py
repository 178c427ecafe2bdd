"""The worker's heartbeat: it keeps a lease on every file whose conversion message it holds,
and on every job whose ingest or archive message it holds.

One thread in the worker's main process (the process that holds the broker connection and the
unacknowledged messages; pool children come and go under it). Every third of
QUIRE_LEASE_SECONDS it pushes the lease of each file it holds to now + QUIRE_LEASE_SECONDS, in
one UPDATE, and of each job it holds in a second one when it holds any: the message running in
a pool process, the ones prefetched (reserved), and the ones waiting for their countdown (a
retry). When the main process dies, its leases run out and the sweeper re-sends those files,
ingests and archives (workers/sweeper.py); a message it received but had not leased yet is
found by the sweeper in the broker's unacknowledged set (``app.queue``).

The thread has its own database engine: the cached one (``app.db``) would otherwise be built
in the main process and inherited by every pool child forked after it, sockets and all. And a
pool child is never forked while the thread is inside the database library (``_IN_DATABASE``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery.worker import state
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app import transitions
from app.config import Settings
from app.db import make_engine
from app.logs import get_logger
from app.models import Worker, utcnow
from app.queue import ARCHIVE_TASK, CONVERT_TASK, INGEST_TASK

log = get_logger("quire.leases")

# A received message wakes the thread, but beats stay this far apart: a busy worker receives a
# message per conversion, and one write each would cost every file a statement.
MIN_BEAT_GAP = 1.0


# Held while the heartbeat thread uses its engine, and taken by every os.fork of this process
# (Celery's pool forks a replacement for a pool process that died, while the thread runs). A
# child forked while the thread is inside the database library inherits that library's locks
# as they were, held ones included (SQLite's process-wide mutex), and its first query of its
# own waits for good: seen once, a replacement for a killed pool process hung until its task's
# hard time limit. So a fork waits until the beat has left the database.
_IN_DATABASE = threading.Lock()
os.register_at_fork(
    before=_IN_DATABASE.acquire,
    after_in_parent=_IN_DATABASE.release,
    after_in_child=_IN_DATABASE.release,
)


def _snapshot(requests: Any) -> list[Any]:
    """The members of one of Celery's WeakSets, read from another thread: the consumer adds to
    them while we iterate, which makes the iteration fail; it is simply read again."""
    for _ in range(10):
        try:
            return list(requests)
        except RuntimeError:  # "Set changed size during iteration"
            continue
    return []


@dataclass
class Held:
    """The ids of the messages a worker holds, by what their lease is on."""

    files: set[str] = field(default_factory=set)  # conversions
    jobs: set[str] = field(default_factory=set)  # ingests and archives

    def add(self, request: Any) -> bool:
        """Add the id of ``request`` if it is a leased task; False if it is not one."""
        name = getattr(request, "name", None)
        ids = self.files if name == CONVERT_TASK else self.jobs if name in _JOB_TASKS else None
        args = getattr(request, "args", None)
        if ids is None or not args or not isinstance(args[0], str):
            return False
        ids.add(args[0])
        return True

    def __or__(self, other: Held) -> Held:
        return Held(self.files | other.files, self.jobs | other.jobs)

    def __bool__(self) -> bool:
        return bool(self.files or self.jobs)


_JOB_TASKS = (INGEST_TASK, ARCHIVE_TASK)


def held_ids() -> Held:
    """The files and jobs of every conversion, ingest and archive message this worker process
    holds: running, reserved (prefetched) and scheduled (an ETA or countdown not reached yet)."""
    held = Held()
    # scheduled_requests is newer than celery-types' stubs.
    scheduled = state.scheduled_requests  # type: ignore[attr-defined]
    for requests in (state.active_requests, state.reserved_requests, scheduled):
        for request in _snapshot(requests):
            held.add(request)
    return held


@dataclass(frozen=True)
class Registration:
    """This worker in the workers' registry, which sizes the scheduler's window
    (app/scheduling.py): its name and its conversion processes."""

    name: str
    slots: int


class Heartbeat:
    """Renews the leases of the files and jobs ``held`` returns, every ``lease / 3`` seconds and
    soon after ``received`` is called."""

    def __init__(
        self,
        engine: Engine,
        lease_seconds: float,
        held: Callable[[], Held] = held_ids,
        registration: Registration | None = None,
    ) -> None:
        self.engine = engine
        self.registration = registration
        # What this worker's last committed beat wrote into its registration: a later beat that
        # finds another value there knows another live worker renews the same node name.
        self._registered_until: datetime | None = None
        self._name_shared_logged = False
        self.lease = timedelta(seconds=lease_seconds)
        self.interval = lease_seconds / 3
        self.held = held
        self._received = Held()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="quire-lease-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.registration is not None:
            try:
                with _IN_DATABASE, Session(self.engine) as session, session.begin():
                    transitions.forget_worker(session, self.registration.name)
            except Exception as error:  # noqa: BLE001 - its registration runs out by itself
                log.warning("worker.unregister_failed", error=str(error))
        with _IN_DATABASE:
            self.engine.dispose()

    def received(self, request: Any) -> None:
        """A message just arrived: lease it at the next beat (Celery signals ``task_received``
        before it adds the request to the sets ``held`` reads)."""
        with self._lock:
            leased = self._received.add(request)
        if leased:
            self._wake.set()

    def beat(self) -> int:
        """One renewal: the number of leases pushed forward (finished files and jobs are left
        alone). Files in one UPDATE, as ever; jobs in a second one only when it holds any."""
        with self._lock:
            held, self._received = self.held() | self._received, Held()
        until = utcnow() + self.lease
        if self.registration is not None:
            self._register(self.registration, until)
        if not held:
            return 0
        with Session(self.engine) as session, session.begin():
            renewed = transitions.renew_leases(session, sorted(held.files), until)
            return renewed + transitions.renew_job_leases(session, sorted(held.jobs), until)

    def _register(self, registration: Registration, until: datetime) -> None:
        """Renew this worker's registration, and say (once) when another worker renewed it
        since our last beat: two hosts run with one node name (``-n``), and the registry, keyed
        by it, counts one host's processes (docs/operations.md, "Several hosts"). The registry
        records no host or process id, so the only sign is a renewal that is not ours."""
        last, self._registered_until = self._registered_until, None  # unknown until committed
        with Session(self.engine) as session, session.begin():
            if last is not None and not self._name_shared_logged:
                renewed_by_another = session.scalar(
                    select(Worker.name).where(
                        Worker.name == registration.name, Worker.expires_at != last
                    )
                )
                if renewed_by_another is not None:
                    self._name_shared_logged = True
                    log.warning(
                        "worker.name_shared",
                        "another live worker renews this worker's registration: two hosts "
                        "run with one node name, and the dispatch window counts one host's "
                        "processes; give each worker host a name of its own (-n)",
                        name=registration.name,
                    )
            transitions.register_worker(session, registration.name, registration.slots, until)
        self._registered_until = until

    def _run(self) -> None:
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                with _IN_DATABASE:
                    self.beat()
            except Exception as error:  # noqa: BLE001 - the database may be away: keep beating
                log.warning("lease.renew_failed", error=str(error))
            self._wake.wait(self.interval)
            self._wake.clear()
            # Woken by a received message: no sooner than MIN_BEAT_GAP after the last beat.
            self._stopped.wait(max(0.0, started + MIN_BEAT_GAP - time.monotonic()))


_heartbeat: Heartbeat | None = None


def start(settings: Settings, registration: Registration | None = None) -> None:
    """Start this worker's heartbeat (its main process, once the pool is up); with
    ``registration``, it also keeps the worker in the registry while it lives."""
    global _heartbeat
    if _heartbeat is None:
        _heartbeat = Heartbeat(
            make_engine(settings.resolved_database_url),
            settings.lease_seconds,
            registration=registration,
        )
        _heartbeat.start()
        log.info("lease.heartbeat_started", every=round(_heartbeat.interval, 2))


def stop() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


def received(request: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.received(request)
