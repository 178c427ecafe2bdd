"""A job's place in line (files_ahead, estimated_start in its status document) and the
scheduler's figures on /metrics (waiting and in flight, in total and per key), issue #16 item 6.

Real database, both backends. The scheduler's state is made in the database directly, as the
scheduler keeps it: a file is in flight while its ``dispatched_at`` is set (marked by
``scheduling.mark_dispatched``, the scheduler's own statement), waiting while PENDING and not
sent in an active job; one case goes through ``scheduling.dispatch`` itself.
"""

from __future__ import annotations

import zipfile
from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from app import metrics, scheduling, transitions
from app.api import metrics as metrics_api
from app.api.deps import owner_of
from app.config import get_settings
from app.db import session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import File, FileStatus, Job, JobStatus, utcnow
from app.zipinput import DocxEntry
from tests.conftest import Backend, SentTasks

# Owners as the API records them: the digest of the key, never the key.
KEY_A, KEY_B, KEY_C = "key-a-secret", "key-b-secret", "key-c-secret"
OWNER_A, OWNER_B, OWNER_C = owner_of(KEY_A), owner_of(KEY_B), owner_of(KEY_C)
ANONYMOUS = ""  # the owner of every job on a server without API keys, as in these tests


def make_job(
    owner: str,
    files: int,
    *,
    copied: bool = True,
    in_flight: int = 0,
    finished: int = 0,
    finished_ago: timedelta = timedelta(seconds=10),
) -> str:
    """A job of ``files`` files in the database: PENDING with nothing copied out of the upload
    (``copied=False``), or IN_PROGRESS with every input copied, its first ``finished`` files
    COMPLETED ``finished_ago``, and the next ``in_flight`` sent to the workers."""
    job_id = new_job_id()
    entries = [
        DocxEntry(index=i, name=f"{i}.docx", info=zipfile.ZipInfo(f"{i}.docx"))
        for i in range(files)
    ]
    with session_scope() as session:
        create_job(session, JobSpec(job_id, upload_bytes=1, owner=owner), entries)
    if not copied:
        return job_id
    with session_scope() as session:
        transitions.start_job(session, job_id)
        session.execute(update(File).where(File.job_id == job_id).values(input_bytes=1))
        ids = list(
            session.scalars(select(File.id).where(File.job_id == job_id).order_by(File.position))
        )
        done = utcnow() - finished_ago
        session.execute(
            update(File)
            .where(File.id.in_(ids[:finished]))
            # touched_at and finished_at together, as a worker's finishing UPDATE sets them.
            .values(status=FileStatus.COMPLETED, finished_at=done, touched_at=done)
        )
        sent = scheduling.mark_dispatched(session, ids[finished : finished + in_flight], utcnow())
        assert len(sent) == in_flight
    return job_id


def status(client: TestClient, job_id: str) -> dict[str, object]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def as_time(text: object) -> datetime:
    assert isinstance(text, str)
    return datetime.fromisoformat(text)


# -- files_ahead and estimated_start ---------------------------------------------------------


def test_a_job_not_started_counts_the_other_jobs_conversions_in_flight(
    client: TestClient,
) -> None:
    make_job(OWNER_A, 10, in_flight=3)
    make_job(OWNER_B, 4, in_flight=2)
    make_job(OWNER_B, 5)  # copied, none sent: waiting files are not ahead of anyone
    not_copied = make_job(ANONYMOUS, 2, copied=False)
    copied = make_job(ANONYMOUS, 2)

    for job_id in (not_copied, copied):
        document = status(client, job_id)
        assert document["files_ahead"] == 5
        # Nothing finished in the last minute: no rate to estimate from.
        assert document["estimated_start"] is None


def test_estimated_start_is_files_ahead_over_the_last_minutes_rate(client: TestClient) -> None:
    # 6 conversions ended 10 s ago: 0.1 per second. The 30 that ended 5 minutes ago are out
    # of the window (counted, the rate would be 0.6 per second and the start 10 s away).
    make_job(OWNER_A, 10, finished=6, in_flight=3)
    make_job(OWNER_C, 40, finished=30, finished_ago=timedelta(minutes=5), in_flight=2)
    job_id = make_job(ANONYMOUS, 1)

    before = utcnow()
    document = status(client, job_id)
    after = utcnow()

    assert document["files_ahead"] == 5
    start = as_time(document["estimated_start"])
    assert start.tzinfo is not None
    # 5 conversions ahead at 0.1 per second: 50 s after the moment the document was built.
    assert before + timedelta(seconds=50) <= start <= after + timedelta(seconds=50)


def test_a_job_with_a_file_in_flight_or_finished_has_nothing_ahead(client: TestClient) -> None:
    make_job(OWNER_A, 10, finished=6, in_flight=3)  # a recent rate: estimates would be made
    # Sent and not claimed yet: every file is still PENDING, its job's place is taken.
    sent_not_claimed = make_job(ANONYMOUS, 3, in_flight=1)
    one_done = make_job(ANONYMOUS, 3, finished=1)
    ended = make_job(ANONYMOUS, 1, finished=1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == ended).values(status=JobStatus.COMPLETED))
    waiting = make_job(ANONYMOUS, 1)

    for job_id in (sent_not_claimed, one_done, ended):
        document = status(client, job_id)
        assert (document["files_ahead"], document["estimated_start"]) == (0, None), job_id
    # The same service, seen from a job that has not started: 3 + 1 of other jobs ahead of it.
    assert status(client, waiting)["files_ahead"] == 4


def test_files_ahead_follows_the_schedulers_own_dispatch(
    client: TestClient, sent: SentTasks
) -> None:
    first, second = make_job(ANONYMOUS, 5), make_job(ANONYMOUS, 5)
    window = get_settings().model_copy(update={"dispatch_window": 3})
    with session_scope() as session:
        # On SQLite a top-up runs after a write of its transaction (app/scheduling.py).
        session.execute(update(Job).where(Job.id == first).values(updated_at=utcnow()))
        dispatched = scheduling.dispatch(session, window)
    assert len(dispatched) == 3
    assert sorted(sent.conversions) == sorted(dispatched)  # sent once the top-up committed
    later = make_job(ANONYMOUS, 2)

    assert status(client, later)["files_ahead"] == 3
    # Both jobs got a place (within a key, the job with fewest in flight goes first): nothing
    # is ahead of either.
    assert [status(client, job)["files_ahead"] for job in (first, second)] == [0, 0]


# -- /metrics ------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics_client(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setattr(metrics, "DATABASE_CACHE_SECONDS", 0.0)  # each scrape reads afresh
    app = FastAPI()
    app.include_router(metrics_api.router)
    return TestClient(app)


def scrape(client: TestClient) -> tuple[Samples, str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, response.text


def per_key(samples: Samples, name: str) -> dict[str, float]:
    return {
        dict(labels)["key"]: value for (metric, labels), value in samples.items() if metric == name
    }


def test_metrics_show_waiting_and_in_flight_per_key_prefix_and_in_total(
    metrics_client: TestClient,
) -> None:
    empty, _ = scrape(metrics_client)
    assert empty[("quire_files_waiting", frozenset())] == 0
    assert empty[("quire_files_in_flight", frozenset())] == 0
    assert per_key(empty, "quire_key_files_waiting") == {}

    make_job(OWNER_A, 5, in_flight=2)  # 2 in flight, 3 waiting
    make_job(OWNER_A, 4, copied=False)  # 4 waiting, not copied out of the upload yet
    make_job(OWNER_B, 4, finished=1, in_flight=3)  # 3 in flight
    make_job(ANONYMOUS, 2, copied=False)  # 2 waiting
    ended = make_job(OWNER_C, 2, finished=2)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == ended).values(status=JobStatus.COMPLETED))
        waiting_files = scheduling.waiting_files(session)

    samples, text = scrape(metrics_client)

    a, b = OWNER_A[:8], OWNER_B[:8]
    assert samples[("quire_files_waiting", frozenset())] == waiting_files == 9
    assert samples[("quire_files_in_flight", frozenset())] == 5
    # Only the keys with work appear (not C, whose job ended), each under its digest's prefix.
    assert per_key(samples, "quire_key_files_waiting") == {a: 7, b: 0, "anonymous": 2}
    assert per_key(samples, "quire_key_files_in_flight") == {a: 2, b: 3, "anonymous": 0}
    for secret in (KEY_A, KEY_B, OWNER_A, OWNER_B):
        assert secret not in text
