"""Windowed, fair dispatch (app/scheduling.py): the order in which files reach the workers.

The workers are played by a loop that takes the conversion messages in the order they were sent
(the broker's first in, first out) and converts each with a fake LibreOffice; everything else
is the real pipeline on the real database. What is checked is the order of the hand-outs, never
a time.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, text, update

from app import queue, scheduling, transitions
from app.config import get_settings
from app.db import make_engine, session_scope
from app.models import File, FileStatus, Worker, utcnow
from app.services.job_actions import cancel_job
from app.storage import get_store
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.workers.helpers import submit
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.leases import Heartbeat, Held, Registration
from workers.libreoffice.fake import FakeConverter
from workers.sweeper import resend_lost_dispatches, top_up


def batch(owner: str, count: int) -> str:
    """A job of ``count`` documents for the key ``owner``, ingested: its files wait their turn."""
    documents = {f"{owner}-{i:03}.docx": make_docx(f"{owner} {i}") for i in range(count)}
    job_id = submit(make_zip(documents), owner=owner)
    ingest_job(job_id, get_store(), get_settings())
    return job_id


def job_of(file_id: str) -> str:
    with session_scope() as session:
        return str(session.scalar(select(File.job_id).where(File.id == file_id)))


class Workers:
    """Takes the conversion messages first in, first out, as the broker hands them out."""

    def __init__(self, sent: SentTasks) -> None:
        self.sent = sent
        self.taken = 0
        self.converter = FakeConverter()
        self.most_in_flight = 0

    def convert(self, count: int | None = None) -> None:
        settings, store = get_settings(), get_store()
        done = 0
        while self.taken < len(self.sent.conversions) and (count is None or done < count):
            self.most_in_flight = max(self.most_in_flight, in_flight())
            convert_file(self.sent.conversions[self.taken], store, self.converter, settings)
            self.taken += 1
            done += 1

    def handed_out(self) -> list[str]:
        """The job of each file handed to a worker, in order."""
        return [job_of(file_id) for file_id in self.sent.conversions]


def in_flight() -> int:
    with session_scope() as session:
        return sum(one.count for one in scheduling.in_flight(session))


def window() -> int:
    with session_scope() as session:
        return scheduling.window(session, get_settings())


def longest_run(order: list[str], job_id: str) -> int:
    longest = run = 0
    for one in order:
        run = run + 1 if one == job_id else 0
        longest = max(longest, run)
    return longest


def test_two_keys_batches_interleave_from_the_first_finished_file(
    backend: Backend, sent: SentTasks
) -> None:
    first = batch("key-a", 16)
    second = batch("key-b", 16)  # submitted a moment later: first in, first out would wait
    size = window()
    # Only the window was sent: the first job's ingest filled it, the second's found no room.
    assert [job_of(f) for f in sent.conversions] == [first] * size
    workers = Workers(sent)
    workers.convert()
    order = workers.handed_out()
    assert Counter(order) == {first: 16, second: 16}  # every file, once
    assert workers.most_in_flight <= size
    # From the first finished file on, the keys alternate by half-windows: neither waits for
    # the other's batch. (First in, first out would hand out 16 of one, then 16 of the other.)
    both_waiting = order[size : size + 16]
    assert Counter(both_waiting) == {first: 8, second: 8}
    assert longest_run(both_waiting, first) <= size // 2
    assert longest_run(both_waiting, second) <= size // 2


def test_a_small_job_goes_at_the_next_free_place_whatever_is_queued(
    backend: Backend, sent: SentTasks
) -> None:
    big = [batch("nightly-a", 30), batch("nightly-b", 30)]
    workers = Workers(sent)
    workers.convert(7)
    small = batch("person", 1)
    assert job_of(sent.conversions[-1]) != small  # no room when it came: it waits its turn...
    workers.convert(1)
    assert job_of(sent.conversions[-1]) == small  # ...of one finished file, not of 60
    workers.convert()
    assert Counter(workers.handed_out()) == {big[0]: 30, big[1]: 30, small: 1}


def test_the_jobs_of_one_key_share_that_keys_half(backend: Backend, sent: SentTasks) -> None:
    other = batch("key-b", 40)
    mine = [batch("key-a", 20), batch("key-a", 20)]
    workers = Workers(sent)
    workers.convert()
    # 32 hand-outs from the 33rd on, while all three jobs still have files left.
    stretch = Counter(workers.handed_out()[32:64])
    assert stretch[other] == 16
    assert stretch[mine[0]] == 8 and stretch[mine[1]] == 8


def test_a_cancel_gives_its_place_in_the_window_to_the_next_job(
    backend: Backend, sent: SentTasks
) -> None:
    first = batch("key-a", 10)
    second = batch("key-b", 10)
    assert {job_of(f) for f in sent.conversions} == {first}  # the window is the first's
    cancel_job(first, owner="key-a")
    # The first job's conversions were cancelled with it: the whole window goes to the second.
    assert [job_of(f) for f in sent.conversions[window() :]] == [second] * window()
    Workers(sent).convert()
    with session_scope() as session:
        statuses = session.scalars(select(File.status).where(File.job_id == second)).all()
    assert statuses == [FileStatus.COMPLETED] * 10


def test_the_window_follows_the_live_workers_slots(backend: Backend) -> None:
    assert window() == scheduling.MIN_WINDOW  # no worker registered yet
    engine = make_engine(get_settings().resolved_database_url)
    heartbeat = Heartbeat(engine, 30, held=Held, registration=Registration("worker-a", 3))
    heartbeat.beat()
    with session_scope() as session:
        transitions.register_worker(session, "worker-b", 5, utcnow() + timedelta(seconds=30))
        transitions.register_worker(session, "dead", 7, utcnow() - timedelta(seconds=1))
    scheduling.forget_live_slots()
    assert window() == scheduling.FLIGHT_PER_SLOT * (3 + 5)  # the dead worker's slots not
    heartbeat.stop()  # a clean stop leaves the registry at once
    with session_scope() as session:
        assert session.get(Worker, "worker-a") is None
    scheduling.forget_live_slots()
    assert window() == scheduling.FLIGHT_PER_SLOT * 5
    fixed = get_settings().model_copy(update={"dispatch_window": 3})
    with session_scope() as session:  # a fixed window wins over the registry
        assert scheduling.window(session, fixed) == 3


def test_dispatches_lost_with_the_broker_are_sent_again_once(
    backend: Backend, sent: SentTasks
) -> None:
    job_id = batch("key-a", 10)
    marked = list(sent.conversions)  # in flight by the database...
    assert len(marked) == window()
    sent.conversions.clear()  # ...and Redis was emptied: their messages are gone
    queued, reserved = marked[0], marked[1]
    settings = get_settings()
    # But one is in the real broker's list after all, and a live worker reserved (and leases)
    # another.
    queue.get_sender().send_task(queue.CONVERT_TASK, args=[queued])
    with session_scope() as session:
        transitions.renew_leases(
            session, [reserved], utcnow() + timedelta(seconds=settings.lease_seconds)
        )
    try:
        assert resend_lost_dispatches(settings) == []  # sent a moment ago: maybe on its way
        with session_scope() as session:  # a lease later
            session.execute(
                update(File)
                .where(File.id.in_(marked))
                .values(dispatched_at=utcnow() - timedelta(seconds=settings.lease_seconds + 1))
            )
        lost = resend_lost_dispatches(settings)
        assert sorted(lost) == sorted(set(marked) - {queued, reserved})
        assert sorted(sent.handovers) == sorted(lost)  # ahead of the queue
        assert resend_lost_dispatches(settings) == []  # marked again: not sent twice
    finally:
        with queue.get_sender().connection_for_write() as connection:
            connection.default_channel.queue_purge(queue.CONVERT_QUEUE)
    assert top_up(settings) == 0  # the window is full of the files just sent again
    sent.conversions += [queued, reserved]  # delivered at last, from the list and the reserve
    Workers(sent).convert()
    with session_scope() as session:
        rows = session.execute(select(File.status, File.attempts).where(File.job_id == job_id))
        assert sorted(rows.all()) == [(FileStatus.COMPLETED, 1)] * 10  # each converted once


def _plan(statement: Any, **values: Any) -> str:
    """The database's plan for ``statement`` with ``values``, as text."""
    with session_scope() as session:
        dialect = session.get_bind().dialect
        sql = str(
            statement.params(**values).compile(
                dialect=dialect, compile_kwargs={"literal_binds": True}
            )
        )
        explain = "EXPLAIN " if dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
        return "\n".join(str(row[-1]) for row in session.execute(text(explain + sql)))


def test_a_top_up_reads_a_big_jobs_waiting_files_from_the_first_one(
    backend: Backend, sent: SentTasks
) -> None:
    """A top-up runs for every finished file, so it must find a job's next waiting files without
    reading its finished ones: through ix_files_job_waiting, from the first waiting file. Sorted
    by position alone, PostgreSQL's planner walked ix_files_job_position from the job's first
    file past every finished one instead (6.7 ms per top-up 7,000 files into a 10,000-file job)."""
    job_id, files, finished = "a-big-job", 3_000, 2_500
    with session_scope() as session:
        session.execute(
            insert(transitions.JOBS).values(
                id=job_id, status="IN_PROGRESS", file_count=files, upload_bytes=1, owner="k"
            )
        )
        session.execute(
            insert(transitions.FILES),
            [
                {
                    "id": f"file-{position:05}",
                    "job_id": job_id,
                    "position": position,
                    "filename": f"{position}.docx",
                    "output_name": f"{position}.pdf",
                    "status": "COMPLETED" if position < finished else "PENDING",
                    "input_bytes": 1,
                }
                for position in range(files)
            ],
        )
    with session_scope() as session:
        session.execute(text("ANALYZE"))  # the planner's figures, as a running database has them
    for plan in (
        _plan(scheduling._NEXT_WAITING, of_job=job_id, count=3),
        _plan(scheduling._RUNNING_JOBS),
    ):
        assert "ix_files_job_waiting" in plan, plan
        assert "ix_files_job_position" not in plan, plan
    with session_scope() as session:  # and it does take the first waiting files
        scheduling.dispatch(session)
    assert sent.conversions[:2] == ["file-02500", "file-02501"]
