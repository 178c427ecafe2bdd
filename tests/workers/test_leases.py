"""Leases: a claim fences the one before it, a live worker renews what it holds, the sweeper
re-sends what a dead one held, and two sweeps never run at once (issue #15)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from app import queue, transitions
from app.config import get_settings
from app.db import make_engine, session_scope
from app.logs import configure_logging
from app.models import File, FileStatus, Job, JobStatus, Lock, utcnow
from app.storage import get_store, input_key, output_key, result_key
from tests.app.helpers import make_job
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip
from tests.workers.helpers import age, result_members, submit
from workers import ingest, tasks
from workers.archive import build_archive
from workers.file_conversion import _record, convert_file
from workers.ingest import ingest_job
from workers.leases import Heartbeat, Held
from workers.libreoffice.fake import FakeConverter
from workers.sweeper import SweepLock, resend_lost_dispatches, resend_unleased, sweep

REPO = Path(__file__).resolve().parents[2]


def ingested_job(count: int) -> tuple[str, list[str]]:
    """A started job whose files' inputs are (said to be) in the store."""
    job_id, file_ids = make_job(count)
    with session_scope() as session:
        session.execute(update(File).where(File.job_id == job_id).values(input_bytes=10))
    return job_id, file_ids


def file_row(file_id: str) -> File:
    with session_scope() as session:
        row = session.get(File, file_id)
        assert row is not None
        return row


def set_lease(file_id: str, seconds_from_now: float | None) -> None:
    until = None if seconds_from_now is None else utcnow() + timedelta(seconds=seconds_from_now)
    with session_scope() as session:
        session.execute(update(File).where(File.id == file_id).values(lease_expires_at=until))


def lease_of(file_id: str) -> datetime:
    lease = file_row(file_id).lease_expires_at
    assert lease is not None
    return lease


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row


def set_job_lease(job_id: str, seconds_from_now: float | None) -> None:
    until = None if seconds_from_now is None else utcnow() + timedelta(seconds=seconds_from_now)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=until))


def job_lease_of(job_id: str) -> datetime:
    lease = job_row(job_id).lease_expires_at
    assert lease is not None
    return lease


def archiving_job() -> str:
    """A running job whose files all finished and whose archive was claimed."""
    job_id, file_ids = ingested_job(1)
    with session_scope() as session:
        assert transitions.complete_file(session, file_ids[0], output_bytes=10, crc32=0)
        assert transitions.record_finished(session, job_id, 1)  # claims the archive
    set_job_lease(job_id, None)  # each test sets the lease it needs
    return job_id


def claim(file_id: str) -> str:
    with session_scope() as session:
        token = transitions.claim_file(session, file_id)
    assert token is not None
    return token


# -- the claim and its fencing token -----------------------------------------------------------


def test_a_claim_sets_a_token_and_a_lease(backend: Backend) -> None:
    _, (file_id,) = ingested_job(1)
    before = utcnow()
    token = claim(file_id)
    row = file_row(file_id)
    assert row.lease_token == token and row.status == FileStatus.IN_PROGRESS
    assert row.lease_expires_at is not None
    lease = get_settings().lease_seconds
    assert row.lease_expires_at.replace(tzinfo=before.tzinfo) >= before + timedelta(seconds=lease)
    assert claim(file_id) != token  # every claim its own token


@pytest.fixture
def logged_events() -> Iterator[Callable[[], list[str]]]:
    """The events this process logs during the test, in order."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    yield lambda: [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    configure_logging("INFO", "text")  # the handler must not outlive its stream


def test_a_slow_worker_fenced_out_by_a_reclaim_records_nothing(
    backend: Backend, tmp_path: Path, logged_events: Callable[[], list[str]]
) -> None:
    job_id, (file_id,) = ingested_job(1)
    store = get_store()
    slow, fresh = tmp_path / "slow.pdf", tmp_path / "fresh.pdf"
    slow.write_bytes(b"%PDF-1.4 slow worker's PDF")
    fresh.write_bytes(b"%PDF-1.4 the successor's PDF")

    slow_token = claim(file_id)
    fresh_token = claim(file_id)  # its lease ran out and the sweeper re-sent it: a new claim
    # The slow worker comes back with its result, then with a failure, then gives the file back.
    assert not _record(file_id, job_id, store, slow, None, slow_token)
    assert not store.exists(output_key(job_id, file_id))  # its PDF was never uploaded
    assert not _record(file_id, job_id, store, None, "late failure", slow_token)
    with session_scope() as session:
        assert not transitions.release_file(session, file_id, slow_token)
    assert file_row(file_id).status == FileStatus.IN_PROGRESS

    assert _record(file_id, job_id, store, fresh, None, fresh_token)
    assert _record(file_id, job_id, store, slow, None, slow_token) is False
    assert b"".join(store.iter_chunks(output_key(job_id, file_id))) == fresh.read_bytes()
    row = file_row(file_id)
    assert row.status == FileStatus.COMPLETED and row.output_bytes == fresh.stat().st_size
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.finished_files == 1  # counted once
    # Its log says so too: one result recorded, three that were not.
    events = logged_events()
    assert events.count("file.completed") == 1
    assert events.count("file.not_recorded") == 3


def test_a_slow_worker_not_yet_replaced_records_and_the_resend_finds_it_done(
    backend: Backend, tmp_path: Path
) -> None:
    job_id, (file_id,) = ingested_job(1)
    pdf = tmp_path / "out.pdf"
    pdf.write_bytes(b"%PDF-1.4 slow but first")
    token = claim(file_id)
    set_lease(file_id, -5)  # its lease ran out; the sweeper re-sent it, nobody took it yet
    assert _record(file_id, job_id, get_store(), pdf, None, token)
    with session_scope() as session:
        assert transitions.claim_file(session, file_id) is None  # the re-sent delivery: done


def test_a_retry_gives_the_file_back_only_under_its_own_claim(backend: Backend) -> None:
    _, (file_id,) = ingested_job(1)
    token = claim(file_id)
    with session_scope() as session:
        assert transitions.release_file(session, file_id, token)
    row = file_row(file_id)
    assert row.status == FileStatus.PENDING and row.attempts == 0
    # Its retry waits in the queue: no lease, so no sweep takes it for a dead worker's.
    assert row.lease_expires_at is None and row.lease_token is None


# -- the lease sweep ---------------------------------------------------------------------------


def test_the_lease_sweep_resends_an_expired_lease_and_not_a_live_one(
    backend: Backend, sent: SentTasks
) -> None:
    _, (dead, alive, unheld) = ingested_job(3)
    claim(dead)
    claim(alive)
    set_lease(dead, -1)  # its worker stopped renewing
    assert resend_unleased(get_settings()).files == [dead]
    assert sent.conversions == [dead]
    assert sent.handovers == [dead]  # ahead of the queue (app.queue.HANDOVER_PRIORITY)
    # Given one more lease period: not sent again until that runs out too.
    assert resend_unleased(get_settings()).files == []
    lease = file_row(dead).lease_expires_at
    assert lease is not None and lease.replace(tzinfo=None) > utcnow().replace(tzinfo=None)
    set_lease(dead, -1)
    assert resend_unleased(get_settings()).files == [dead]
    assert unheld not in sent.conversions and alive not in sent.conversions


def test_the_lease_sweep_resends_an_expired_ingest_and_archive_and_not_live_ones(
    backend: Backend, sent: SentTasks
) -> None:
    ingest_dead, _ = make_job(2)  # started, nothing copied yet
    ingest_alive, _ = make_job(2)
    ingest_never_held, _ = make_job(2)  # its message only waits in the queue: no lease
    ingest_over, _ = ingested_job(2)  # every file copied: its ingest needs nothing
    archive_dead, archive_alive = archiving_job(), archiving_job()
    cancelled, _ = make_job(1)
    with session_scope() as session:
        assert transitions.cancel_job(session, cancelled, "stop") == 1
    for job_id in (ingest_dead, ingest_over, archive_dead, cancelled):
        set_job_lease(job_id, -1)  # their worker stopped renewing
    for job_id in (ingest_alive, archive_alive):
        set_job_lease(job_id, 60)

    resent = resend_unleased(get_settings())
    assert resent.jobs.ingest == [ingest_dead] and resent.jobs.archive == [archive_dead]
    assert resent.files == []
    assert sent.ingests == [ingest_dead] and sent.archives == [archive_dead]
    # Given one more lease period: not sent again until that runs out too.
    assert job_lease_of(ingest_dead).replace(tzinfo=None) > utcnow().replace(tzinfo=None)
    assert not resend_unleased(get_settings()).jobs
    set_job_lease(archive_dead, -1)
    assert resend_unleased(get_settings()).jobs.archive == [archive_dead]
    assert ingest_never_held not in sent.ingests
    assert job_row(cancelled).status == JobStatus.CANCELLED and cancelled not in sent.ingests


def test_claiming_the_archive_starts_a_fresh_lease(backend: Backend, sent: SentTasks) -> None:
    job_id, (file_id,) = ingested_job(1)
    set_job_lease(job_id, -60)  # held for its ingest, which finished a while ago
    with session_scope() as session:
        assert transitions.complete_file(session, file_id, output_bytes=10, crc32=0)
        assert transitions.record_finished(session, job_id, 1)
    # The ingest's old lease does not count: the archive message is only being sent.
    assert job_lease_of(job_id).replace(tzinfo=None) > utcnow().replace(tzinfo=None)
    assert not resend_unleased(get_settings()).jobs
    # The claimer died before its send (or nobody took it for a lease): the sweep sends it.
    set_job_lease(job_id, -1)
    assert resend_unleased(get_settings()).jobs.archive == [job_id]
    assert sent.archives == [job_id]


def test_an_old_message_resends_only_the_task_it_was(backend: Backend) -> None:
    ingesting, _ = make_job(1)
    archiving = archiving_job()
    leased = archiving_job()
    set_job_lease(leased, 60)
    with session_scope() as session:
        # A dead consumer's ingest of a job whose archive is claimed since, its archive of a job
        # still being ingested, and an archive some live worker holds again.
        found = transitions.unleased_jobs(
            session, [ingesting, archiving], [ingesting, archiving, leased], utcnow()
        )
    assert found.ingest == [ingesting] and found.archive == [archiving]


def test_the_stale_path_does_not_send_again_what_the_lease_sweep_resent(
    backend: Backend, sent: SentTasks
) -> None:
    ingesting, _ = make_job(2)
    archiving = archiving_job()
    for job_id in (ingesting, archiving):
        age(job_id, get_settings().stale_after + 5)  # stale as well as unleased
        set_job_lease(job_id, -1)
    summary = sweep(get_settings())
    assert sent.ingests == [ingesting] and sent.archives == [archiving]
    assert summary["ingests"] == 0 and summary["archives"] == 0  # counted as lease re-sends


def test_the_stale_path_leaves_a_file_whose_lease_is_live(
    backend: Backend, sent: SentTasks
) -> None:
    job_id, (slow, dead) = ingested_job(2)
    claim(slow)
    claim(dead)
    age(job_id, get_settings().stale_after + 5)  # both untouched for QUIRE_STALE_AFTER
    set_lease(dead, None)  # claimed before leases existed (or by an old worker)
    summary = sweep(get_settings())
    # A live worker still renews the slow one's lease: long-running, not lost.
    assert sent.conversions == [dead]
    assert summary["conversions"] == 1


# -- ingest and archive run twice, or late ------------------------------------------------------


class WorkerKilled(BaseException):
    """Stands in for the SIGKILL of the worker running an ingest: nothing catches it."""


def test_an_ingest_resent_after_its_worker_died_and_a_late_one_copy_each_file_once(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = {f"doc-{i}.docx": make_docx(f"Document {i}") for i in range(7)}
    job_id = submit(make_zip(documents))
    settings, store = get_settings(), get_store()
    monkeypatch.setattr(ingest, "BATCH", 3)
    batches: list[list[str]] = []

    def killed_sending_the_second_batch(file_ids: Any) -> None:
        batches.append(list(file_ids))
        if len(batches) == 2:  # its inputs are recorded, its conversions never sent
            raise WorkerKilled
        sent.conversions.extend(file_ids)

    monkeypatch.setattr(queue, "send_conversions", killed_sending_the_second_batch)
    with pytest.raises(WorkerKilled):
        ingest_job(job_id, store, settings)
    monkeypatch.setattr(queue, "send_conversions", sent.conversions.extend)
    first, unsent = batches
    # The second batch's were marked in flight by the scheduler, and never sent.
    assert sent.conversions == first and unsent

    set_job_lease(job_id, -1)  # the dead worker's lease ran out: the sweep re-sends the ingest
    resent = resend_unleased(settings)
    assert resent.jobs.ingest == [job_id]
    # The first batch's messages wait in the real broker (the sent fixture kept them off it);
    # the unsent ones are in no list and no worker holds them: lost, and sent again.
    sender = queue.get_sender()
    for file_id in first:
        sender.send_task(queue.CONVERT_TASK, args=[file_id])
    try:
        assert resend_lost_dispatches(settings, any_age=True) == sorted(unsent)
    finally:
        with sender.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue.CONVERT_QUEUE)
    assert sent.handovers == sorted(unsent)
    ingest_job(sent.ingests.pop(), store, settings)  # copies the last one
    ingest_job(job_id, store, settings)  # the original message, redelivered late: nothing left
    with session_scope() as session:
        rows = session.execute(select(File.id, File.input_bytes).where(File.job_id == job_id)).all()
    assert len(rows) == len(documents)  # the file rows are the submission's, never made again
    for file_id, size in rows:
        assert size is not None and store.exists(input_key(job_id, file_id))
    # Every file copied: the lease sweep has no ingest left to send, whatever the lease says.
    set_job_lease(job_id, -1)
    assert not resend_unleased(settings).jobs

    converter = FakeConverter()
    done = 0
    while done < len(sent.conversions):  # each finished file sends the next waiting one
        convert_file(sent.conversions[done], store, converter, settings)
        done += 1
    assert {file_id for file_id, _ in rows} == set(sent.conversions)  # every one sent
    assert len(converter.converted) == len(documents)  # each converted once
    with session_scope() as session:
        attempts = session.scalars(select(File.attempts).where(File.job_id == job_id)).all()
    assert attempts == [1] * len(documents)
    assert job_row(job_id).finished_files == len(documents) and sent.archives == [job_id]


def test_a_late_archive_cannot_overwrite_the_next_rounds_or_complete_the_job(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, converter = get_settings(), get_store(), FakeConverter()
    job_id = submit(make_zip({"a.docx": make_docx("Alpha"), "b.docx": make_docx("Beta")}))
    ingest_job(job_id, store, settings)
    a, b = sent.conversions
    convert_file(a, store, converter, settings)
    with session_scope() as session:  # b gave up (a passing outage): round one ends without it
        assert transitions.fail_files(session, [b], "gave up") == 1
        assert transitions.record_finished(session, job_id, 1)
    round_one = job_row(job_id).archive_enqueued_at
    slow_read = store.iter_chunks
    paused: list[bool] = []

    def meanwhile() -> None:
        """While the slow worker's archive is paused half-way, the world moves on."""
        set_job_lease(job_id, -1)  # its lease ran out: the sweep re-sends the archive
        assert resend_unleased(settings).jobs.archive == [job_id]
        build_archive(job_id, store)  # another worker writes round one's archive
        assert job_row(job_id).status == JobStatus.COMPLETED
        with session_scope() as session:  # the client retries b, which now converts
            plan = transitions.retry_job(session, job_id)
        assert plan is not None and plan.convert == [b]
        sent.archives.clear()
        convert_file(b, store, converter, settings)
        assert sent.archives == [job_id]
        build_archive(job_id, store)  # round two's archive

    def iter_chunks(key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        if not paused:
            paused.append(True)
            meanwhile()
        yield from slow_read(key, chunk_size)

    monkeypatch.setattr(store, "iter_chunks", iter_chunks)
    build_archive(job_id, store)  # the slow worker comes back and finishes writing round one's

    job = job_row(job_id)
    assert paused and job.status == JobStatus.COMPLETED
    assert job.archive_enqueued_at is not None and job.archive_enqueued_at != round_one
    assert sorted(result_members(job_id)) == ["a.pdf", "b.pdf"]  # round two's, not overwritten
    assert job.result_bytes == store.size(result_key(job_id))


# -- the heartbeat and the unacknowledged messages, with a real worker and a real Redis -------


def test_a_beat_renews_held_jobs_in_a_second_update_only_when_it_holds_any(
    backend: Backend,
) -> None:
    _, (file_id,) = ingested_job(1)
    job_id, _ = make_job(1)
    engine = make_engine(get_settings().resolved_database_url)
    updates: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: (
            updates.append(statement.split()[1])
            if statement.lstrip().upper().startswith("UPDATE")
            else None
        ),
    )
    held = Held(files={file_id})
    heartbeat = Heartbeat(engine, 5, held=lambda: held)
    try:
        assert heartbeat.beat() == 1
        assert updates == ["files"]  # the file path as before: one UPDATE
        held.jobs.add(job_id)
        updates.clear()
        assert heartbeat.beat() == 2
        assert updates == ["files", "jobs"]
        assert job_lease_of(job_id).replace(tzinfo=None) > utcnow().replace(tzinfo=None)
        held.files.clear()
        updates.clear()
        assert heartbeat.beat() == 1
        assert updates == ["jobs"]  # renew_leases sends nothing for no files
    finally:
        engine.dispose()


def test_no_process_is_forked_while_the_heartbeat_is_inside_the_database(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child forked while the thread is inside the database library would inherit its locks
    held (SQLite's process-wide mutex) and wait for good at its first query: Celery's pool
    forks replacements while the heartbeat runs, so the fork waits for the beat to leave."""
    _, (file_id,) = ingested_job(1)
    engine = make_engine(get_settings().resolved_database_url)
    inside, leave = threading.Event(), threading.Event()
    renew = transitions.renew_leases

    def renew_slowly(*args: Any) -> int:
        inside.set()
        leave.wait(30)  # a bound for a broken test
        return renew(*args)

    monkeypatch.setattr(transitions, "renew_leases", renew_slowly)
    heartbeat = Heartbeat(engine, 60, held=lambda: Held(files={file_id}))
    forked: list[int] = []

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # the child: nothing else of the test runs here
        forked.append(pid)
        os.waitpid(pid, 0)

    heartbeat.start()
    try:
        assert inside.wait(30)
        forking = threading.Thread(target=fork)
        forking.start()
        forking.join(1.0)
        assert forked == []  # the fork waits while the beat is in the database
        leave.set()
        forking.join(30)
        assert len(forked) == 1  # and happens once it left
    finally:
        leave.set()
        heartbeat.stop()


@pytest.fixture
def private_broker(backend: Backend, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Redis database of this test's own, emptied: the worker below consumes from it."""
    url = redis_url.rsplit("/", 1)[0] + "/11"
    monkeypatch.setenv("QUIRE_BROKER_URL", url)
    monkeypatch.setenv("QUIRE_LEASE_SECONDS", "5")
    reset_caches()
    with queue.get_sender().connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel
        channel.client.flushdb()
    return url


@pytest.fixture
def worker(
    backend: Backend, private_broker: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (main process and one pool process) on both queues."""
    env = {
        **os.environ,
        **backend.env,
        "QUIRE_BROKER_URL": private_broker,
        "QUIRE_LEASE_SECONDS": "5",
        "QUIRE_CONVERTER": "fake",
        "QUIRE_LOG_FORMAT": "text",
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed after the process
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "workers.celery_app:celery", "worker"),
            *("--concurrency", "1", "-Q", f"{queue.CONVERT_QUEUE},{queue.CONTROL_QUEUE}"),
            "--without-mingle",
            *("--without-gossip", "--without-heartbeat", "-n", f"leases-{os.getpid()}@%h"),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    log.close()


def until(check: Callable[[], Any], what: str, log: Path, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"never: {what}\n{log.read_text(errors='replace')[-3000:]}")


def pool_child(worker: subprocess.Popen[bytes]) -> int:
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return int(children[0]) if children else 0


def test_a_live_worker_leases_what_it_holds_and_a_killed_ones_messages_are_found(
    backend: Backend, sent: SentTasks, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    _, (waiting_a, waiting_b, reserved, queued) = ingested_job(4)
    ingesting, _ = make_job(2)
    archiving = archiving_job()
    sender = queue.get_sender()
    # Two retries waiting for their countdown in the worker (scheduled, unacknowledged), and an
    # ingest's and an archive's retry too.
    for file_id in (waiting_a, waiting_b):
        sender.send_task(queue.CONVERT_TASK, args=[file_id], countdown=3600)
    sender.send_task(queue.INGEST_TASK, args=[ingesting], countdown=3600)
    sender.send_task(queue.ARCHIVE_TASK, args=[archiving], countdown=3600)
    until(lambda: file_row(waiting_b).lease_expires_at, "the scheduled ones leased", log)
    until(lambda: job_row(archiving).lease_expires_at, "the scheduled archive leased", log)
    ingest_leased = until(lambda: job_row(ingesting).lease_expires_at, "the ingest leased", log)
    # One prefetched while the pool process cannot start it (stopped): reserved, not running.
    child = until(lambda: pool_child(worker), "the worker's pool process", log)
    os.kill(child, signal.SIGSTOP)
    sender.send_task(queue.CONVERT_TASK, args=[reserved])
    first = until(lambda: file_row(reserved).lease_expires_at, "the reserved one leased", log)
    # Renewed again and again by the heartbeat (every third of the lease), not only on receipt.
    until(lambda: lease_of(reserved) > first, "a second renewal", log)
    renewed = lease_of(waiting_a)
    until(lambda: lease_of(waiting_a) > renewed, "the scheduled one renewed", log)
    until(lambda: job_lease_of(ingesting) > ingest_leased, "the ingest's lease renewed", log)
    assert file_row(reserved).status == FileStatus.PENDING  # held, never started

    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool: no one acknowledges
    worker.wait(timeout=30)
    sender.send_task(queue.CONVERT_TASK, args=[queued])  # waits in the queue: nobody holds it
    set_lease(waiting_a, None)  # as if killed between the delivery and its first renewal
    set_job_lease(archiving, None)

    held = {waiting_a, waiting_b, reserved}
    found = until(
        lambda: set(queue.unacked_conversions(time.time() - 5)) >= held and True,
        "the dead worker's messages, delivered more than a lease ago",
        log,
    )
    assert found
    assert queued not in queue.unacked_conversions(time.time() + 60)  # waiting is not held
    jobs_held = {(queue.INGEST_TASK, ingesting), (queue.ARCHIVE_TASK, archiving)}
    assert jobs_held <= set(queue.unacked_tasks(time.time() - 5))
    # Once the leases ran out: the expired ones by their lease, the unleased one by its message.
    until(lambda: {waiting_b, reserved} <= set(_expired()), "the dead worker's leases ran out", log)
    until(lambda: _expired_jobs().ingest == [ingesting], "the ingest's lease ran out", log)
    resent = resend_unleased(get_settings())
    assert sorted(resent.files) == sorted(held)
    assert sorted(sent.conversions) == sorted(held)
    # The ingest by its lease, the archive (never renewed) by its unacknowledged message.
    assert resent.jobs.ingest == [ingesting] and resent.jobs.archive == [archiving]
    assert sent.ingests == [ingesting] and sent.archives == [archiving]


def _expired() -> list[str]:
    with session_scope() as session:
        return transitions.expired_leases(session, utcnow())


def _expired_jobs() -> transitions.JobResends:
    with session_scope() as session:
        return transitions.expired_job_leases(session, utcnow())


# -- the sweep lock ----------------------------------------------------------------------------


def test_two_sweeps_at_once_one_skips(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, finish = threading.Event(), threading.Event()
    real_sweep = sweep

    def slow_sweep(*args: Any, **kwargs: Any) -> dict[str, int]:
        entered.set()  # the lock is held from here until ``finish``
        assert finish.wait(60)
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(tasks, "sweep", slow_sweep)
    results: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        # The task's body: Celery's own call path sets up per-task state lazily, not for two
        # threads calling a task for the first time at once.
        results.append(tasks.sweeper.run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert entered.wait(60)
    deadline = time.monotonic() + 60
    while not results and time.monotonic() < deadline:  # the other one, meanwhile
        time.sleep(0.05)
    finish.set()
    for thread in threads:
        thread.join(60)
    assert results[0] == {"skipped": True}  # the second finished first: it did not wait
    assert "conversions" in results[1] and "expired" in results[1]
    with session_scope() as session:  # released at the end
        assert session.scalars(select(Lock)).all() == []
    assert "skipped" not in tasks.sweeper()  # the next one runs


def test_a_sweep_lock_whose_holder_died_expires(backend: Backend) -> None:
    dead, next_one = SweepLock(get_settings()), SweepLock(get_settings())
    assert dead.take()
    assert not next_one.take()
    assert dead.take()  # its holder renews it
    with session_scope() as session:
        session.execute(update(Lock).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert next_one.take()  # the holder was killed half-way: its lock ran out
    assert not dead.take()  # and it cannot take it back while the other holds it
    next_one.release()
    assert dead.take()
