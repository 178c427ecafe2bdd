"""Windowed dispatch: which files' conversions go to the workers next, and when.

Files wait their turn in the database, not in the broker. At most a window of conversions is
in flight at once (sent to the broker and not finished): QUIRE_DISPATCH_WINDOW, or by default
twice the conversion slots of the live workers, so every worker process has one running and
one waiting for it. The window is topped up whenever room appears or work arrives: in the
transaction that records a finished file, in an ingest's batch, after a cancel or a retry, and
on every sweep. Whose files fill it is decided here, fairly:

1. the API key (``jobs.owner``) with the fewest conversions in flight goes first;
2. within that key, its job with the fewest in flight;
3. ties are broken at random, so no key and no job is always first;
4. within a job, files go in zip order.

So a one-file job waits for at most a window of conversions, however many files other jobs
have; two keys with big batches each get half of the conversions; and several jobs of one key
share that key's half. Measured figures: docs/benchmarks.md ("Fairness: small jobs beside a
batch, and two keys").

A conversion is "in flight" from the moment its file's ``dispatched_at`` is set (in the
transaction whose commit sends the message) until the file finishes, which clears it. Two
topping-ups may run at once on PostgreSQL: each takes only rows no one else has locked (SKIP
LOCKED) and sets ``dispatched_at`` by a conditional UPDATE, so a file is never sent twice by
them; at worst the window is briefly one or two over or under, and the next top-up evens it.
On SQLite a top-up always runs after a write of its transaction, which holds the database's
one write lock: they run one after another.

A message lost after its file was marked (Redis restarted or emptied, a worker killed between
the commit and the send) is found by the sweeper (``workers.sweeper.resend_lost_dispatches``):
the file is in flight by the database, but no worker leases it and no broker list holds it.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Integer, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from app import queue, transitions
from app.config import Settings, get_settings
from app.models import TERMINAL_FILE_STATUSES, FileStatus, JobStatus, Worker, utcnow

FILES, JOBS = transitions.FILES, transitions.JOBS

# With no live worker registered (all starting, or none yet), a window still this wide: the
# first worker to start finds work waiting for it.
MIN_WINDOW = 4
# Conversions in flight per worker slot: one running, one waiting in the broker so the slot
# never idles between two files.
FLIGHT_PER_SLOT = 2
# How long a process trusts its count of the live workers' slots: it changes only when a
# worker starts or dies, and reading it for every file would cost a query each.
SLOTS_CACHE_SECONDS = 5.0

# A file is waiting when its input is copied, it is not sent, and its job runs.
_WAITING = (
    (FILES.c.status == FileStatus.PENDING)
    & FILES.c.dispatched_at.is_(None)
    & FILES.c.input_bytes.is_not(None)
)
# The files in flight, read through ix_files_dispatched: a window's rows. Written as a range
# from a fixed moment, with no join and no GROUP BY, because any of those makes SQLite's planner
# read every file of every running job through the covering ix_files_job_waiting instead, once
# per finished file: 8 % of the throughput of a 1,000-file job (make bench). Counted in Python.
_LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
_FLYING_FILES = select(FILES.c.job_id).where(
    FILES.c.dispatched_at > bindparam("long_ago", type_=FILES.c.dispatched_at.type),
    FILES.c.status.not_in(TERMINAL_FILE_STATUSES),
)
# A job's waiting files in zip order, sorted as ix_files_job_waiting holds them. The leading
# columns are constant among a job's waiting files, but PostgreSQL does not count IS NULL as
# one: sorted by position alone, it walked ix_files_job_position from the job's first file and
# filtered out every finished one, a read that grows with the job (6.7 ms per top-up 7,000 files
# into a 10,000-file job), where this order reads the index from the first waiting file.
_WAITING_IN_ZIP_ORDER = (FILES.c.job_id, FILES.c.status, FILES.c.dispatched_at, FILES.c.position)
# Every running job with its key, and whether it has a file waiting: what a top-up chooses among,
# and whose conversions in flight count against the window, in one statement. The waiting file
# is looked for as the job's first (not with EXISTS, which PostgreSQL's planner ran as a scan of
# the files table per job, expecting a match early).
_RUNNING_JOBS = select(
    JOBS.c.id,
    JOBS.c.owner,
    select(FILES.c.id)
    .where(FILES.c.job_id == JOBS.c.id, _WAITING)
    .order_by(*_WAITING_IN_ZIP_ORDER)
    .limit(1)
    .scalar_subquery()
    .is_not(None),
).where(JOBS.c.status == JobStatus.IN_PROGRESS)
# Built once, as the other per-file statements are (app/transitions.py): a top-up runs for every
# finished file.
_NEXT_WAITING = (
    select(FILES.c.id)
    .where(FILES.c.job_id == bindparam("of_job"), _WAITING)
    .order_by(*_WAITING_IN_ZIP_ORDER)
    .limit(bindparam("count", type_=Integer))
)
_NEXT_WAITING_SKIP_LOCKED = _NEXT_WAITING.with_for_update(skip_locked=True)


def _marking(chosen: ColumnElement[bool]) -> ReturningUpdate[tuple[str, int]]:
    """Set ``dispatched_at`` on the ``chosen`` files still waiting; their ids and positions."""
    return (
        update(FILES)
        .where(chosen, FILES.c.status == FileStatus.PENDING, FILES.c.dispatched_at.is_(None))
        .values(dispatched_at=bindparam("now", type_=FILES.c.dispatched_at.type))
        .returning(FILES.c.id, FILES.c.position)
    )


_MARK_DISPATCHED = _marking(FILES.c.id.in_(bindparam("file_ids", expanding=True)))
# On PostgreSQL, the next ``count`` waiting files of one job chosen and marked in one statement:
# what a top-up does when one job alone has files waiting (a big job running alone: every
# finished file), a round trip less (0.19 against 0.43 ms of the worker's CPU, measured). The
# rows are chosen in a materialized CTE: inside ``IN (…)`` the planner may run the locking
# subquery once per row it updates, and SKIP LOCKED then finds new rows each time, taking more
# than ``count`` (seen in tests/workers/test_scheduling.py). SQLite has no round trip, and there
# the one statement cost more than the two (0.9 against 0.11 ms).
_NEXT_LOCKED = _NEXT_WAITING_SKIP_LOCKED.cte("next_waiting").prefix_with("MATERIALIZED")
_TAKE_NEXT_WAITING = _marking(FILES.c.id.in_(select(_NEXT_LOCKED.c.id)))


@dataclass
class _SlotsCache:
    slots: int = 0
    read_at: float = -SLOTS_CACHE_SECONDS


_live_slots = _SlotsCache()


def live_worker_slots(session: Session, now: datetime | None = None) -> int:
    """The conversion slots of the workers whose heartbeat is current (cached a few seconds)."""
    if time.monotonic() - _live_slots.read_at < SLOTS_CACHE_SECONDS:
        return _live_slots.slots
    total = session.scalar(
        select(func.coalesce(func.sum(Worker.slots), 0)).where(
            Worker.expires_at >= (now or utcnow())
        )
    )
    _live_slots.slots, _live_slots.read_at = int(total or 0), time.monotonic()
    return _live_slots.slots


def forget_live_slots() -> None:
    """Read the live workers' slots afresh at the next top-up (tests, after changing them)."""
    _live_slots.read_at = -SLOTS_CACHE_SECONDS


def window(session: Session, settings: Settings) -> int:
    """How many conversions may be in flight at once."""
    if settings.dispatch_window:
        return settings.dispatch_window
    return max(MIN_WINDOW, FLIGHT_PER_SLOT * live_worker_slots(session))


@dataclass(frozen=True)
class InFlight:
    job_id: str
    owner: str
    count: int


def in_flight(session: Session) -> list[InFlight]:
    """Conversions sent and not finished, per running job."""
    counts = Counter(session.execute(_FLYING_FILES, {"long_ago": _LONG_AGO}).scalars())
    if not counts:
        return []
    rows = session.execute(
        select(JOBS.c.id, JOBS.c.owner).where(
            JOBS.c.id.in_(list(counts)), JOBS.c.status == JobStatus.IN_PROGRESS
        )
    )
    owners = {str(job_id): str(owner) for job_id, owner in rows}
    return [InFlight(job, owners[job], count) for job, count in counts.items() if job in owners]


@dataclass
class _Candidates:
    """The running jobs that have waiting files, and what each job and key has in flight."""

    owner_of: dict[str, str]  # job id -> its key
    job_flight: Counter[str]
    owner_flight: Counter[str]
    # A random rank per job and per key, drawn once per top-up: ties go to the lower rank.
    rank: dict[str, float] = field(default_factory=dict)

    def tie(self, name: str) -> float:
        return self.rank.setdefault(name, random.random())

    def next_job(self) -> str | None:
        if not self.owner_of:
            return None
        owner = min(
            set(self.owner_of.values()),
            key=lambda key: (self.owner_flight[key], self.tie("key:" + key)),
        )
        return min(
            (job for job, key in self.owner_of.items() if key == owner),
            key=lambda job: (self.job_flight[job], self.tie(job)),
        )

    def sent(self, job_id: str) -> None:
        self.job_flight[job_id] += 1
        self.owner_flight[self.owner_of[job_id]] += 1


def _next_waiting(session: Session, job_id: str, count: int) -> list[str]:
    """Up to ``count`` waiting files of the job, in zip order, that no other top-up holds."""
    locking = session.get_bind().dialect.name == "postgresql"
    query = _NEXT_WAITING_SKIP_LOCKED if locking else _NEXT_WAITING
    return list(session.execute(query, {"of_job": job_id, "count": count}).scalars())


def _choose(
    session: Session,
    room: int,
    candidates: dict[str, str],
    job_flight: Counter[str],
    owner_of: dict[str, str],
) -> list[str]:
    """The next ``room`` files of the ``candidates`` (job id -> key) to send, in the order they
    go: fewest in flight first, by key, then by job (module docstring). ``owner_of`` holds every
    running job's key: a job with nothing waiting still counts for its key."""
    owner_flight: Counter[str] = Counter()
    for running, count in job_flight.items():
        owner_flight[owner_of[running]] += count
    chooser = _Candidates(dict(candidates), Counter(job_flight), owner_flight)
    fetched: dict[str, list[str]] = {}
    chosen: list[str] = []
    while len(chosen) < room:
        job_id = chooser.next_job()
        if job_id is None:
            break
        if job_id not in fetched:
            fetched[job_id] = _next_waiting(session, job_id, room - len(chosen))
        if not fetched[job_id]:
            del chooser.owner_of[job_id]  # nothing (left) to take from it in this top-up
            continue
        chosen.append(fetched[job_id].pop(0))
        chooser.sent(job_id)
    return chosen


def mark_dispatched(session: Session, file_ids: Iterable[str], now: datetime) -> list[str]:
    """Set ``dispatched_at`` on those of ``file_ids`` still waiting; the ones it set, in the
    order given (another top-up may have taken some meanwhile)."""
    ids = list(file_ids)
    if not ids:
        return []
    taken = {row.id for row in session.execute(_MARK_DISPATCHED, {"file_ids": ids, "now": now})}
    return [file_id for file_id in ids if file_id in taken]


def _take_next_waiting(session: Session, job_id: str, count: int, now: datetime) -> list[str]:
    """Mark the job's next ``count`` waiting files in flight; their ids, in zip order.
    PostgreSQL only (_TAKE_NEXT_WAITING)."""
    rows = session.execute(_TAKE_NEXT_WAITING, {"of_job": job_id, "count": count, "now": now})
    return [row.id for row in sorted(rows, key=lambda row: row.position)]


def dispatch(session: Session, settings: Settings | None = None) -> list[str]:
    """Top up the window: choose the next files, mark them in flight, and send their
    conversions once this session's transaction commits. Returns their ids.

    It runs for every finished file: three or four statements (measured: docs/benchmarks.md,
    "What the scheduler costs").
    On SQLite call it after the transaction's first write (see the module docstring)."""
    settings = settings or get_settings()
    flying = Counter(session.execute(_FLYING_FILES, {"long_ago": _LONG_AGO}).scalars())
    owner_of: dict[str, str] = {}
    waiting: dict[str, str] = {}  # the running jobs with a file waiting, and their keys
    for job_id, owner, has_waiting in session.execute(_RUNNING_JOBS):
        owner_of[job_id] = owner
        if has_waiting:
            waiting[job_id] = owner
    # Only running jobs' conversions count against the window, as in_flight() reports them.
    job_flight = Counter({job_id: n for job_id, n in flying.items() if job_id in owner_of})
    room = window(session, settings) - job_flight.total()
    if room <= 0 or not waiting:
        return []
    now = utcnow()
    if len(waiting) == 1 and session.get_bind().dialect.name == "postgresql":
        sent = _take_next_waiting(session, next(iter(waiting)), room, now)
    else:
        sent = mark_dispatched(session, _choose(session, room, waiting, job_flight, owner_of), now)
    queue.queue_after_commit(session, queue.CONVERT_TASK, *sent)
    return sent


# Not sent to a worker yet, in an active job: copied and waiting its turn, or not copied out of
# the upload yet.
_UNSENT = (
    JOBS.c.status.in_(transitions.ACTIVE_JOB_STATUSES),
    FILES.c.status == FileStatus.PENDING,
    FILES.c.dispatched_at.is_(None),
)


def waiting_files(session: Session) -> int:
    """Files of active jobs not sent to a worker yet. What an autoscaler should scale on (the
    broker's list holds only the window)."""
    total = session.scalar(
        select(func.count())
        .select_from(FILES)
        .join(JOBS, JOBS.c.id == FILES.c.job_id)
        .where(*_UNSENT)
    )
    return int(total or 0)


# -- read-only: per-key figures for /metrics (app/metrics.py) -----------------------------------


def waiting_by_owner(session: Session) -> dict[str, int]:
    """The files ``waiting_files`` counts, per key (``jobs.owner``); keys with none are left
    out. One GROUP BY over the waiting rows, read from ix_files_job_waiting."""
    rows = session.execute(
        select(JOBS.c.owner, func.count())
        .select_from(FILES)
        .join(JOBS, JOBS.c.id == FILES.c.job_id)
        .where(*_UNSENT)
        .group_by(JOBS.c.owner)
    )
    return {str(owner): int(count) for owner, count in rows}
