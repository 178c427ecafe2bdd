"""State transitions: each is a conditional UPDATE, so repeats and races count once."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from app import transitions
from app.db import session_scope
from app.models import File, FileStatus, Job, JobStatus, utcnow
from tests.app.helpers import make_job
from tests.conftest import Backend, SentTasks


def test_a_file_finishes_once(backend: Backend) -> None:
    _, (file_id,) = make_job(1)
    with session_scope() as session:
        assert transitions.claim_file(session, file_id)
        assert transitions.complete_file(session, file_id, output_bytes=10, crc32=1)
        assert not transitions.complete_file(session, file_id, output_bytes=99, crc32=2)
        assert transitions.fail_files(session, [file_id], "late failure") == 0
        assert not transitions.claim_file(session, file_id)  # a redelivery finds nothing to do
    with session_scope() as session:
        row = session.get(File, file_id)
        assert row is not None
        assert (row.status, row.output_bytes, row.error_message) == (FileStatus.COMPLETED, 10, None)


def test_archive_is_claimed_only_when_all_files_are_terminal(backend: Backend) -> None:
    job_id, (first, second) = make_job(2)
    with session_scope() as session:
        failed = transitions.fail_files(session, [first], "bad")
        assert not transitions.record_finished(session, job_id, failed)
    with session_scope() as session:
        transitions.complete_file(session, second, output_bytes=1, crc32=0)
        assert transitions.record_finished(session, job_id, 1)  # the last one claims it
    with session_scope() as session:
        assert not transitions.claim_archive(session, job_id)  # once
        job = session.get(Job, job_id)
        assert job is not None and job.finished_files == 2 and job.archive_enqueued_at


def test_concurrent_finishers_start_exactly_one_archive(backend: Backend, sent: SentTasks) -> None:
    """Many workers finish the last files at once; one, and only one, starts the archive."""
    job_id, file_ids = make_job(16)
    barrier = threading.Barrier(len(file_ids))
    claimed: list[bool] = []
    lock = threading.Lock()

    def finish(file_id: str) -> None:
        barrier.wait()
        with session_scope() as session:
            transitions.complete_file(session, file_id, output_bytes=1, crc32=0)
            result = transitions.record_finished(session, job_id, 1)
        with lock:
            claimed.append(result)

    threads = [threading.Thread(target=finish, args=(file_id,)) for file_id in file_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert claimed.count(True) == 1
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.finished_files == 16


def test_a_failed_job_leaves_no_file_unfinished(backend: Backend) -> None:
    job_id, (done, waiting) = make_job(2)
    with session_scope() as session:
        transitions.complete_file(session, done, output_bytes=1, crc32=0)
        transitions.fail_job(session, job_id, "The uploaded zip can no longer be read.")
    with session_scope() as session:
        files = {f.id: f for f in session.scalars(select(File).where(File.job_id == job_id))}
    assert files[done].status == FileStatus.COMPLETED
    assert files[waiting].status == FileStatus.FAILED
    assert files[waiting].error_message == "The uploaded zip can no longer be read."


def test_job_outcomes_are_final(backend: Backend) -> None:
    job_id, _ = make_job(1)
    with session_scope() as session:
        assert transitions.finish_job(session, job_id, result_bytes=5)
        assert not transitions.fail_job(session, job_id, "too late")
        assert not transitions.finish_job(session, job_id, result_bytes=6)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.COMPLETED and job.result_bytes == 5


def test_stale_work_is_found_for_the_sweeper(backend: Backend) -> None:
    job_id, (ingested, not_ingested, waiting) = make_job(3)
    with session_scope() as session:
        sent = session.get(File, ingested)
        assert sent is not None
        sent.input_bytes, sent.dispatched_at = 10, utcnow()  # copied, and its message sent
        # Copied and never sent: it waits for the scheduler, however long, and is not lost.
        session.get(File, waiting).input_bytes = 10  # type: ignore[union-attr]
    with session_scope() as session:
        assert transitions.stale_files(session, timedelta(hours=1)) == []
        stale = transitions.stale_files(session, timedelta(seconds=-1))
    assert sorted((f.file_id, f.ingested, f.in_progress) for f in stale) == sorted(
        [(ingested, True, False), (not_ingested, False, False)]
    )
    with session_scope() as session:
        transitions.claim_file(session, ingested)
        resumed = transitions.stale_files(session, timedelta(hours=1), include_in_progress=True)
    assert [(f.file_id, f.job_id, f.in_progress) for f in resumed] == [(ingested, job_id, True)]


def test_file_rows_read_back_as_the_orm_writes_them(backend: Backend) -> None:
    """create_job writes file rows below the ORM (#3): the values must be stored exactly as the
    ORM stores them, or comparisons in SQL (the sweeper's touched_at) would go wrong."""
    job_id, ids = make_job(3)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        files = session.scalars(select(File).where(File.job_id == job_id)).all()
        assert sorted(file.id for file in files) == sorted(ids)
        for file in files:
            assert file.status is FileStatus.PENDING and file.attempts == 0
            assert file.touched_at == job.created_at  # the same instant, read back alike
        # Compared in SQL against values the ORM binds, as the sweeper does.
        stale = select(File.id).where(File.job_id == job_id)
        before = session.scalars(stale.where(File.touched_at < job.created_at)).all()
        at_or_after = session.scalars(stale.where(File.touched_at >= job.created_at)).all()
        later = job.created_at + timedelta(microseconds=1)
        earlier_than_later = session.scalars(stale.where(File.touched_at < later)).all()
        assert (len(before), len(at_or_after), len(earlier_than_later)) == (0, 3, 3)
        pending = session.scalars(stale.where(File.status == FileStatus.PENDING)).all()
        assert len(pending) == 3
