"""The sweeper re-sends exactly the work whose message was lost or whose worker died."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app import transitions
from app.config import get_settings
from app.db import session_scope
from app.models import File, Job, utcnow
from tests.app.helpers import make_job
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.workers.helpers import age, submit
from workers.sweeper import resend_lost_ingests, sweep


def test_fresh_work_is_left_alone(backend: Backend, sent: SentTasks) -> None:
    make_job(3)
    assert sweep(get_settings()) == {
        "ingests": 0,
        "conversions": 0,
        "archives": 0,
        "dispatched": 0,
    }
    assert sent.conversions == [] and sent.ingests == []


def test_stale_files_are_reconverted_or_reingested(backend: Backend, sent: SentTasks) -> None:
    job_id, (ingested, _never_ingested, finished) = make_job(3)
    with session_scope() as session:
        # Copied and sent (its message since lost).
        session.execute(
            update(File).where(File.id == ingested).values(input_bytes=10, dispatched_at=utcnow())
        )
        transitions.complete_file(session, finished, output_bytes=1, crc32=0)
    age(job_id, get_settings().stale_after + 5)
    summary = sweep(get_settings())
    assert sent.conversions == [ingested]  # its input exists: convert it again
    assert sent.ingests == [job_id]  # its input was never written: the job's ingest again
    assert summary == {"ingests": 1, "conversions": 1, "archives": 0, "dispatched": 0}
    # Touched: the next sweep waits another period before sending them again.
    assert sweep(get_settings()) == {
        "ingests": 0,
        "conversions": 0,
        "archives": 0,
        "dispatched": 0,
    }


def test_resume_takes_in_progress_files_of_any_age(backend: Backend, sent: SentTasks) -> None:
    _, (running, _waiting) = make_job(2)
    with session_scope() as session:
        session.execute(update(File).where(File.id == running).values(input_bytes=10))
        transitions.claim_file(session, running)
    sweep(get_settings())
    assert sent.conversions == []
    sweep(get_settings(), resume_in_progress=True)
    assert sent.conversions == [running]


def test_lost_ingest_and_lost_archive_are_sent_again(backend: Backend, sent: SentTasks) -> None:
    job_id, (file_id,) = make_job(1)
    with session_scope() as session:  # back to PENDING: as if the ingest message was lost
        session.execute(update(Job).where(Job.id == job_id).values(status="PENDING"))
    age(job_id, get_settings().stale_after + 5)
    sweep(get_settings())
    assert sent.ingests == [job_id]

    with session_scope() as session:
        transitions.start_job(session, job_id)
        transitions.complete_file(session, file_id, output_bytes=1, crc32=0)
        session.execute(update(Job).where(Job.id == job_id).values(finished_files=1))
    # Every file finished but nobody claimed the archive (the worker died in between).
    assert sweep(get_settings())["archives"] == 1
    assert sent.archives == [job_id]
    # Claimed, then the archive message was lost: sent again once the job is stale.
    age(job_id, get_settings().stale_after + 5)
    sweep(get_settings())
    assert sent.archives == [job_id, job_id]


def test_queued_files_are_not_resent_while_the_queue_still_holds_work(
    backend: Backend, sent: SentTasks
) -> None:
    from app import queue

    job_id, (file_id,) = make_job(1)
    with session_scope() as session:  # copied and sent
        session.execute(
            update(File).where(File.id == file_id).values(input_bytes=10, dispatched_at=utcnow())
        )
    age(job_id, get_settings().stale_after + 5)
    # A real message waits in the real conversion queue (the sweeper asks the broker).
    queue.get_sender().send_task(queue.CONVERT_TASK, args=["someone-else"])
    try:
        assert queue.queued_conversions() == 1
        assert sweep(get_settings())["conversions"] == 0  # it may just be waiting its turn
    finally:
        with queue.get_sender().connection_for_write() as connection:
            connection.default_channel.queue_purge(queue.CONVERT_QUEUE)
    assert sweep(get_settings())["conversions"] == 1  # nothing waits: its message was lost
    assert sent.conversions == [file_id]


def test_expired_jobs_lose_their_objects_then_their_rows(backend: Backend) -> None:
    from app.storage import get_store, input_key, upload_key
    from workers.sweeper import expire

    old_id, (old_file,) = make_job(1)
    new_id, _ = make_job(1)
    store = get_store()
    for job_id in (old_id, new_id):
        store.put_bytes(upload_key(job_id), b"zip", "application/zip")
    store.put_bytes(input_key(old_id, old_file), b"docx", "application/octet-stream")
    with session_scope() as session:
        for job_id in (old_id, new_id):
            transitions.fail_job(session, job_id, "over")
    age(old_id, get_settings().job_ttl + 5)
    assert expire(get_settings(), store) == 1
    with session_scope() as session:
        assert session.get(Job, old_id) is None
        assert session.get(File, old_file) is None
        assert session.get(Job, new_id) is not None
    assert not store.exists(upload_key(old_id)) and not store.exists(input_key(old_id, old_file))
    assert store.exists(upload_key(new_id))


def test_an_ingest_lost_before_any_worker_leased_it_is_sent_again(
    backend: Backend, sent: SentTasks
) -> None:
    from app import queue

    documents = make_zip({"a.docx": make_docx("Alpha")})
    queued, lost, fresh = submit(documents), submit(documents), submit(documents)
    settings = get_settings()
    lease_ago = utcnow() - timedelta(seconds=settings.lease_seconds + 1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id.in_([queued, lost])).values(created_at=lease_ago))
    sender = queue.get_sender()
    sender.send_task(queue.INGEST_TASK, args=[queued])  # still waiting in the real control queue
    try:
        assert resend_lost_ingests(settings) == [lost]  # the fresh one may be on its way
        assert sent.ingests == [lost]
        with session_scope() as session:  # leased with the send: lost again, the lease sweep acts
            job = session.get(Job, lost)
            assert job is not None and job.lease_expires_at is not None
        assert resend_lost_ingests(settings) == []
    finally:
        with sender.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue.CONTROL_QUEUE)
    assert fresh not in sent.ingests
