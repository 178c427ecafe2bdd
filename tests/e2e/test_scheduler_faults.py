"""Fault injection for the scheduler's state (issue #16, item 4): the conversions in flight are
marked in the database (``files.dispatched_at``) and their messages live in Redis, so losing
Redis's copy (emptied, restarted without persistence) or killing a worker between the commit
that marks the next file and the send must still end with every file converted exactly once.

Each test runs the service as ``make run`` does, with a broker the test owns, injects the fault
while the job still has files waiting in the database, settles the job (``run_batch``: every
file's PDF, once, with its own text, no 5xx), and checks in the service's log that the sweeper
found the lost messages (``sweep.dispatch_lost``, app/scheduling.py and workers/sweeper.py).
What each did is recorded in the "fault injection" table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, select

from app import queue
from app.config import get_settings
from app.models import File, FileStatus, utcnow
from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import TERMINAL, FaultRecord, Service
from tests.e2e.helpers import (
    compose_like_env,
    embedded_env,
    run_batch,
    runner_process,
    wait_for_job,
)
from tests.services import RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# Short leases and sweeps, so a lost message is found within seconds; the mechanism is the same
# at the defaults (20 s and 10 s).
SCHEDULER_FAULT_ENV = {
    **embedded_env(),
    "QUIRE_LEASE_SECONDS": "6",
    "QUIRE_SWEEP_INTERVAL": "2",
}
DOCUMENTS = 80
# More for the kill between commit and send: that moment comes once per finished file, and the
# job must still be running (with files waiting) when it is caught.
MID_DISPATCH_DOCUMENTS = 120
# Pages that make each document take a while to lay out, so the job is still running, with
# files waiting in the database, when the fault comes.
FILLER = " ".join(["Filler text that only makes the document longer to lay out."] * 40)
FILLER_PAGES = 3
# Bounds for a broken test, not timed assertions: how long to look for the moment to strike,
# and how long the job may take after it (well under pytest's timeout, so a job that never ends
# fails with the service's log; run_batch alone would wait 600 s).
LOOK_FOR_SECONDS = 120
SETTLE_SECONDS = 240


def long_batch(tag: str, count: int = DOCUMENTS) -> tuple[bytes, dict[str, str]]:
    """A zip of ``count`` documents, each with its own text on its first page (as ``run_batch``
    reads it) and FILLER_PAGES more: entry name -> that text."""
    markers = {f"{tag}/doc-{i:03}.docx": f"{tag} document {i}" for i in range(count)}
    documents = {
        name: make_docx(text, *([FILLER] * FILLER_PAGES)) for name, text in markers.items()
    }
    return make_zip(documents), markers


# -- what the service's database and broker hold -----------------------------------------------


@dataclass(frozen=True)
class FileRow:
    id: str
    status: FileStatus
    dispatched_at: datetime | None
    lease_expires_at: datetime | None


def database_reader(service: Service) -> Engine:
    """An engine on the service's database: its PostgreSQL, or its SQLite file opened read-only
    (the test must not take the write lock the service's processes share)."""
    if "QUIRE_DATABASE_URL" in service.env:
        return create_engine(service.env["QUIRE_DATABASE_URL"], pool_size=1)
    path = service.data_dir / "quire.db"
    return create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    )


def job_files(engine: Engine, job_id: str) -> list[FileRow]:
    columns = (File.id, File.status, File.dispatched_at, File.lease_expires_at)
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).where(File.job_id == job_id))
        return [FileRow(*row) for row in rows]


def waiting(files: list[FileRow]) -> list[FileRow]:
    """Files the scheduler has not sent yet: their turn is decided from the database."""
    return [f for f in files if f.status == FileStatus.PENDING and f.dispatched_at is None]


@pytest.fixture
def broker_view(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point this process's ``app.queue`` at a broker, to read it the way the sweeper does."""

    def point_at(url: str) -> None:
        monkeypatch.setenv("QUIRE_BROKER_URL", url)
        get_settings.cache_clear()
        queue.get_sender.cache_clear()

    yield point_at
    monkeypatch.undo()
    get_settings.cache_clear()
    queue.get_sender.cache_clear()


def in_broker() -> set[str]:
    """The file ids whose conversion message the broker holds: waiting in one of its lists, or
    delivered to a worker and not acknowledged (what ``resend_lost_dispatches`` reads)."""
    return queue.queued_conversion_ids() | set(queue.unacked_conversions(time.time() + 60))


# -- the worker, frozen at the moment a fault needs -------------------------------------------


@contextmanager
def frozen(group: int) -> Iterator[None]:
    """Every process of the worker (its main process, its pool and what they started) stopped:
    nothing is sent, received or acknowledged while the test looks and strikes."""
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed while frozen: nothing to continue
            os.killpg(group, signal.SIGCONT)


def worker_group(service: Service) -> int:
    """The worker's process group: the runner starts it in a session of its own."""
    main = runner_process(service, "worker")
    assert main is not None, service.log_tail()
    return os.getpgid(main)


def strike_while_frozen(
    service: Service,
    job_id: str,
    ready: Callable[[], bool],
    strike: Callable[[], object],
    what: str,
) -> int:
    """Freeze the worker again and again until ``ready()`` holds while it is frozen, then
    ``strike()`` before it runs on; returns how many looks it took."""
    group = worker_group(service)
    deadline = time.monotonic() + LOOK_FOR_SECONDS
    looks = 0
    while time.monotonic() < deadline:
        looks += 1
        with frozen(group):
            if ready():
                strike()
                return looks
        time.sleep(0.005)
    raise AssertionError(
        f"{what} not seen in {looks} looks over {LOOK_FOR_SECONDS} s (job {job_id}):\n"
        f"{service.log_tail()}"
    )


def then_the_end(
    service: Service, ledger: FaultRecord, fault: Callable[[str], None]
) -> Callable[[str], None]:
    """``fault``, then a wait for the job's end bounded by SETTLE_SECONDS (``run_batch`` then
    accounts for its files)."""

    def inject(job_id: str) -> None:
        fault(job_id)
        wait_for_job(
            service, ledger, job_id, lambda s: s["status"] in TERMINAL, timeout=SETTLE_SECONDS
        )

    return inject


# -- the service's log ---------------------------------------------------------------------------


def log_text_since(service: Service, offset: int) -> str:
    with open(service.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def events_since(service: Service, offset: int, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of the event ``name`` written after ``offset``."""
    return [
        json.loads(line[line.index("{") :])
        for line in log_text_since(service, offset).splitlines()
        if f'"{name}"' in line
    ]


def files_found_lost(service: Service, offset: int) -> int:
    return sum(
        int(event["files"]) for event in events_since(service, offset, "sweep.dispatch_lost")
    )


# -- the stacks ----------------------------------------------------------------------------------


def stack_env(request: pytest.FixtureRequest, stack: str, broker: RedisServer) -> dict[str, str]:
    """The embedded default, or PostgreSQL + S3; either way the broker is the test's own Redis,
    which it may empty or restart without touching another test's."""
    env = (
        SCHEDULER_FAULT_ENV
        if stack == "embedded"
        else {
            **compose_like_env(request),
            **SCHEDULER_FAULT_ENV,
        }
    )
    return {**env, "QUIRE_BROKER_URL": broker.url}


def lose_the_broker_state(
    service: Service,
    ledger: FaultRecord,
    job_id: str,
    engine: Engine,
    fault: Callable[[], object],
    name: str,
) -> set[str]:
    """Inject ``fault`` at a moment the job's conversions wait in the broker's lists (so the
    fault destroys messages the database says are in flight) and more of its files wait in the
    database, with the worker frozen meanwhile so that moment holds while the fault lands.
    Returns the files whose waiting message it destroyed."""
    destroyed: set[str] = set()

    def ready() -> bool:
        files = job_files(engine, job_id)
        queued = queue.queued_conversion_ids() & {f.id for f in files}
        if not queued or not waiting(files):
            return False
        destroyed.update(queued)
        return True

    looks = strike_while_frozen(service, job_id, ready, fault, "a conversion waiting in the list")
    ledger.faults.append(
        f"{name} with {len(destroyed)} conversion(s) queued, the worker frozen (look {looks})"
    )
    print(f"{name}: destroyed {len(destroyed)} queued conversion(s) at look {looks}")
    return destroyed


# -- 1 and 2: the broker's copy of the window is lost -------------------------------------------


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3"])
def test_the_broker_emptied_mid_job(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    broker_view: Callable[[str], None],
    tmp_path: Path,
    stack: str,
) -> None:
    with redis_server(tmp_path / "redis", durable=True) as broker:
        broker_view(broker.url)
        service = make_service(stack_env(request, stack, broker))
        service.start()
        engine = database_reader(service)
        log_before = service.log_path.stat().st_size
        destroyed: set[str] = set()

        def flush_all(job_id: str) -> None:
            # The queued messages, the unacknowledged set and kombu's bindings: all gone.
            client = redis.Redis.from_url(broker.url)
            destroyed.update(
                lose_the_broker_state(service, ledger, job_id, engine, client.flushall, "FLUSHALL")
            )
            client.close()

        try:
            run_batch(
                service,
                ledger,
                long_batch("flushed"),
                fault=then_the_end(service, ledger, flush_all),
            )
        finally:
            engine.dispose()
        # The mechanism: the sweeper sent again what the database said was in flight, the
        # destroyed messages at least (no other path sends them: no worker held or leased them).
        assert destroyed
        assert files_found_lost(service, log_before) >= len(destroyed), service.log_tail()
        assert service.stop() == 0


def test_the_broker_restarted_without_persistence_mid_job(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    broker_view: Callable[[str], None],
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis", durable=False) as broker:
        broker_view(broker.url)
        service = make_service(stack_env(request, "embedded", broker))
        service.start()
        engine = database_reader(service)
        log_before = service.log_path.stat().st_size
        destroyed: set[str] = set()

        def restart(job_id: str) -> None:
            destroyed.update(
                lose_the_broker_state(service, ledger, job_id, engine, broker.stop, "redis stopped")
            )
            time.sleep(2)  # the workers meet a broker that is away, and retry
            broker.start()  # on the same port, empty: it kept nothing
            ledger.faults.append("redis started again, empty")

        try:
            run_batch(
                service,
                ledger,
                long_batch("restarted"),
                fault=then_the_end(service, ledger, restart),
            )
        finally:
            engine.dispose()
        # Those destroyed, and any a worker failed to send while Redis was away.
        assert destroyed
        assert files_found_lost(service, log_before) >= len(destroyed), service.log_tail()
        assert service.stop() == 0


# -- 3: a worker killed between the commit that marks the next file and its send ---------------


class BrokerPushes:
    """Every message pushed onto a list of the broker, as Redis's MONITOR stream shows it: tells
    a conversion never sent from one sent and taken off its list by a worker that has not
    recorded it as unacknowledged yet (both are in no list and not in the unacknowledged set)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()  # type: ignore[no-untyped-call]
        self.monitor.__enter__()  # sends MONITOR: from here on, every command is streamed
        self.pushes: list[str] = []
        self.echoed: set[str] = set()
        self.closing = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.closing:
            raw = self.monitor.connection.read_response()
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            command = line.split("] ", 1)[-1][:8].upper()
            with self.changed:
                if command.startswith('"LPUSH"'):
                    self.pushes.append(line)
                elif command.startswith('"ECHO"'):
                    self.echoed.add(line.rsplit(" ", 1)[-1].strip('"'))
                self.changed.notify_all()

    def caught_up(self) -> None:
        """Wait until the stream was read up to now: Redis streams the commands to its monitors
        in the order it runs them, so once this ECHO is read every push before it has been."""
        token = uuid.uuid4().hex
        self.client.echo(token)
        with self.changed:
            caught_up = self.changed.wait_for(lambda: token in self.echoed, timeout=30)
        assert caught_up, "the MONITOR stream was not read up to the ECHO"

    def pushed(self, file_id: str) -> bool:
        with self.changed:
            return any(file_id in line for line in self.pushes)

    def close(self) -> None:
        self.closing = True
        self.client.echo("closing")  # wakes the reader
        self.reader.join(timeout=30)
        self.monitor.__exit__()
        self.client.close()


@dataclass
class MidDispatch:
    """What the looks for a worker stopped between its commit and its send saw."""

    looks: int = 0
    # Files in no list and not unacknowledged that had been pushed: a worker had taken them off
    # the list and not recorded them yet. Not what this test kills at.
    being_delivered: int = 0
    never_sent: list[str] = field(default_factory=list)
    still_waiting: int = 0  # files of the job not sent yet when it was killed


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3"])
def test_a_worker_killed_mid_dispatch(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    broker_view: Callable[[str], None],
    tmp_path: Path,
    stack: str,
) -> None:
    with redis_server(tmp_path / "redis", durable=True) as broker:
        broker_view(broker.url)
        service = make_service(stack_env(request, stack, broker))
        service.start()
        engine = database_reader(service)
        pushes = BrokerPushes(broker.url)
        seen = MidDispatch()
        kill_offset = 0

        def marked_not_sent(job_id: str) -> bool:
            """While the worker is frozen: a file of the job marked in flight (the commit of the
            transaction that chose it is done), not leased, in no list, not unacknowledged, and
            never pushed: its worker stopped after the commit and before the send."""
            seen.looks += 1
            files = job_files(engine, job_id)
            assert any(f.status == FileStatus.PENDING for f in files), (
                f"the job ran out of files first: {seen}"
            )
            now = utcnow()
            suspects = [
                f.id
                for f in files
                if f.status == FileStatus.PENDING
                and f.dispatched_at is not None
                and (f.lease_expires_at is None or f.lease_expires_at < now)
            ]
            if not suspects or not waiting(files):
                return False
            held = in_broker()
            missing = [file_id for file_id in suspects if file_id not in held]
            if not missing:
                return False
            pushes.caught_up()
            for file_id in missing:
                if pushes.pushed(file_id):
                    seen.being_delivered += 1
                else:
                    seen.never_sent.append(file_id)
            seen.still_waiting = len(waiting(files))
            return bool(seen.never_sent)

        def kill_mid_dispatch(job_id: str) -> None:
            nonlocal kill_offset
            # Sent ones are seen pushed: the look above could tell a sent file from one not.
            assert any(pushes.pushed(f.id) for f in job_files(engine, job_id)), pushes.pushes[:3]
            group = worker_group(service)
            kill_offset = service.log_path.stat().st_size

            def kill() -> None:
                os.killpg(group, signal.SIGKILL)

            strike_while_frozen(
                service, job_id, lambda: marked_not_sent(job_id), kill, "a file marked, not sent"
            )
            ledger.faults.append(
                f"kill -9 the worker between commit and send of {len(seen.never_sent)} "
                f"file(s) (look {seen.looks}, {seen.being_delivered} mid-delivery passed by)"
            )

        try:
            run_batch(
                service,
                ledger,
                long_batch("killed", MID_DISPATCH_DOCUMENTS),
                fault=then_the_end(service, ledger, kill_mid_dispatch),
            )
        finally:
            pushes.close()
            engine.dispose()
        print(f"mid-dispatch: {seen}")
        # The mechanism: the sweeper found the files marked and never sent, and only then were
        # they converted (nothing else would send them: no message of theirs exists).
        assert seen.never_sent
        assert files_found_lost(service, kill_offset) >= len(seen.never_sent), service.log_tail()
        after = log_text_since(service, kill_offset)
        found_at = after.index('"sweep.dispatch_lost"')
        for file_id in seen.never_sent:
            assert after.index(f'"file_id": "{file_id}"') > found_at, file_id
        assert service.stop() == 0
