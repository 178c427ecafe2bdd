"""Webhook deliveries against a real HTTP receiver, on both backends.

The receiver is a threaded ``http.server`` on a free port that records every request and
answers what the test tells it to. Time is a fake clock passed to ``deliver`` (retries are due
in the database, so moving the clock is all a retry needs); the broker is captured.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import select, update

from app import queue
from app.config import get_settings
from app.db import session_scope
from app.models import DeliveryStatus, Job, JobStatus, WebhookDelivery, utcnow
from app.status import status_document_of
from app.storage import get_store
from app.webhooks import claim_attempt, lease_seconds, verify_signature, webhook_secret
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip
from tests.services import free_port
from tests.workers.webhook_helpers import (
    Clock,
    Receiver,
    delivery,
    finished_job,
    run_job,
    settings_with,
    submit,
)
from workers.sweeper import sweep
from workers.webhooks import base_url, deliver

if TYPE_CHECKING:
    from tests.e2e.conftest import Service


@pytest.fixture(autouse=True)
def allow_loopback_receivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receivers listen on 127.0.0.1, which Quire refuses unless the operator allows
    private addresses (tests/workers/test_webhook_targets.py tests the refusal)."""
    monkeypatch.setenv("QUIRE_WEBHOOK_ALLOW_PRIVATE", "true")


# -- helpers -----------------------------------------------------------------------------------


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; every one Quire writes is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def test_a_finished_job_posts_its_signed_status_document(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "QUIRE_PUBLIC_URL", "https://quire.example.com/")
    job_id = submit({"a.docx": make_docx("Alpha"), "bad.docx": b"not a docx"}, receiver.url)
    run_job(job_id, sent)
    # Scheduled in the transaction that ended the job, sent once it committed.
    (delivery_id,) = webhooks_sent
    assert delivery(delivery_id).status == DeliveryStatus.PENDING

    attempt = deliver(delivery_id, settings)
    assert (attempt.number, attempt.status) == (1, DeliveryStatus.DELIVERED)

    (request,) = receiver.requests
    assert request.path == "/hooks/quire?token=abc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["quire-event"] == "job.completed"
    assert request.headers["quire-delivery"] == delivery_id
    signature = request.headers["quire-signature"]
    secret = webhook_secret(settings)
    assert verify_signature(secret, signature, request.body)
    assert not verify_signature(secret, signature, request.body.replace(b"COMPLETED", b"FAILED!!!"))
    assert not verify_signature("another secret", signature, request.body)

    # The body is the job's status document, as the API answers it (less the delivery's own
    # state), with links on the public URL.
    body = json.loads(request.body)
    with session_scope() as session:
        document = status_document_of(session, job_id, base_url(settings), get_store(), 60)
    assert document is not None
    expected = json.loads(document.model_dump_json(exclude={"webhook"}))
    for files in (body["files"], expected["files"]):
        for entry in files:  # presigned: signed again at each build
            entry["download_url"] = bool(entry["download_url"])
    assert body == expected
    assert body["status"] == "COMPLETED"
    assert body["download_url"] == f"https://quire.example.com/api/v1/jobs/{job_id}/download"
    assert {f["filename"]: f["download_url"] for f in body["files"]} == {
        "a.docx": True,
        "bad.docx": False,
    }

    row = delivery(delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        DeliveryStatus.DELIVERED,
        1,
        200,
        None,
    )
    assert row.delivered_at is not None and row.next_attempt_at is None
    # Delivered: nothing is due any more, whoever asks.
    assert deliver(delivery_id, settings).number is None
    assert sweep(settings) is not None and webhooks_sent == [delivery_id]
    assert len(receiver.requests) == 1


def test_job_without_callback_url_schedules_nothing(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str]
) -> None:
    job_id = submit({"a.docx": make_docx("Alpha")}, None)
    run_job(job_id, sent)
    assert webhooks_sent == []
    with session_scope() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []
        job_status = session.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
    assert job_status == JobStatus.COMPLETED


def test_a_job_that_failed_sends_job_failed(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    from workers.tasks import _fail_job

    # No file converts: the archive step fails the job.
    job_id = submit({"bad.docx": b"not a docx"}, receiver.url)
    run_job(job_id, sent)
    (delivery_id,) = webhooks_sent
    deliver(delivery_id, get_settings())
    (request,) = receiver.requests
    assert request.headers["quire-event"] == "job.failed"
    assert json.loads(request.body)["status"] == "FAILED"
    # A task giving up on a job that already ended changes nothing and sends nothing.
    _fail_job(job_id, "too late")
    assert webhooks_sent == [delivery_id]

    # The tasks' own fail path (an ingest or archive task that gave up) schedules one too.
    other = submit({"a.docx": make_docx("Alpha")}, receiver.url)
    _fail_job(other, "The upload could not be unpacked.")
    assert len(webhooks_sent) == 2
    assert delivery(webhooks_sent[1]).event == "job.failed"


def test_failed_attempts_are_retried_with_backoff_from_the_database(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    settings = get_settings()
    receiver.answers = [500, 503]
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    clock = Clock()

    first = deliver(delivery_id, settings, clock=clock)
    assert (first.number, first.status, first.retry_in) == (1, DeliveryStatus.PENDING, 10)
    row = delivery(delivery_id)
    assert (row.attempts, row.last_status_code) == (1, 500)
    assert row.last_error == "HTTP 5xx"  # the class only: the exact answer is logged
    assert aware(row.next_attempt_at) == clock.now + timedelta(seconds=10)

    # Not due yet: a duplicate message or an early sweep makes no attempt.
    clock.advance(9)
    assert deliver(delivery_id, settings, clock=clock).number is None
    assert len(receiver.requests) == 1

    clock.advance(1)
    second = deliver(delivery_id, settings, clock=clock)
    assert (second.number, second.status, second.retry_in) == (2, DeliveryStatus.PENDING, 30)
    assert delivery(delivery_id).last_status_code == 503

    clock.advance(30)
    third = deliver(delivery_id, settings, clock=clock)
    assert (third.number, third.status, third.retry_in) == (3, DeliveryStatus.DELIVERED, None)
    row = delivery(delivery_id)
    assert (row.attempts, row.last_status_code, row.last_error) == (3, 200, None)

    # Every attempt carries the same delivery id (receivers de-duplicate on it), each signed
    # with its own timestamp.
    assert [r.headers["quire-delivery"] for r in receiver.requests] == [delivery_id] * 3
    timestamps = []
    for request in receiver.requests:
        signature = request.headers["quire-signature"]
        timestamps.append(int(signature.split(",")[0].removeprefix("t=")))
        assert verify_signature(
            webhook_secret(settings), signature, request.body, now=timestamps[-1]
        )
    assert timestamps[1] - timestamps[0] == 10 and timestamps[2] - timestamps[1] == 30


def test_a_delivery_fails_after_the_last_attempt(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_MAX_ATTEMPTS", "4")
    receiver.answers = [500] * 10
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    clock = Clock()
    delays = []
    while (attempt := deliver(delivery_id, settings, clock=clock)).retry_in is not None:
        delays.append(attempt.retry_in)
        clock.advance(attempt.retry_in)
    assert (attempt.number, attempt.status) == (4, DeliveryStatus.FAILED)
    assert delays == [10, 30, 90]
    row = delivery(delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.FAILED, 4, 500)
    assert row.next_attempt_at is None and row.delivered_at is None
    clock.advance(7200)
    assert deliver(delivery_id, settings, clock=clock).number is None
    assert len(receiver.requests) == 4


def test_errors_without_an_answer_are_recorded(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_TIMEOUT", "0.3")

    # Too slow: the answer comes after the timeout.
    receiver.delay = 1.0
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    clock = Clock()
    attempt = deliver(delivery_id, settings, clock=clock)
    assert attempt.status == DeliveryStatus.PENDING
    assert delivery(delivery_id).last_error == "timed out"
    assert delivery(delivery_id).last_status_code is None

    # A redirect is an answer, not followed: the receiver's Location is never requested.
    receiver.delay = 0
    receiver.answers = [302]
    receiver.location = receiver.url.replace("/hooks/", "/elsewhere/")
    clock.advance(10)
    attempt = deliver(delivery_id, settings, clock=clock)
    assert attempt.status == DeliveryStatus.PENDING
    row = delivery(delivery_id)
    assert row.last_status_code == 302
    assert row.last_error == "HTTP 3xx: redirects are not followed"  # no Location shown
    assert [r.path.split("?")[0] for r in receiver.requests] == ["/hooks/quire"] * 2

    # Nothing listens: connection refused.
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(url=f"http://127.0.0.1:{free_port()}/gone")
        )
    clock.advance(30)
    attempt = deliver(delivery_id, settings, clock=clock)
    assert (attempt.number, attempt.status) == (3, DeliveryStatus.PENDING)
    assert delivery(delivery_id).last_error == "connection failed"  # not "Connection refused"


def test_a_delivery_survives_a_restart(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    # The job ends and schedules its callback, but the message is lost (the broker lost it,
    # or the process stopped right after the commit).
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    webhooks_sent.clear()
    # Restart: every per-process object is rebuilt from the settings; only the rows remain.
    from app.db import get_engine

    get_engine().dispose()
    reset_caches()
    settings = get_settings()
    sweep(settings)
    assert webhooks_sent == [delivery_id]  # due in the database: sent again
    assert deliver(delivery_id, settings).status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1


def test_an_attempt_whose_worker_died_is_taken_up_after_its_lease(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    settings = get_settings()
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    webhooks_sent.clear()
    # A worker claimed attempt 1 and died before sending (or before recording the answer).
    with session_scope() as session:
        assert claim_attempt(session, delivery_id, utcnow(), lease_seconds(settings)) == 1
    sweep(settings)
    assert webhooks_sent == []  # leased: maybe still in flight
    assert deliver(delivery_id, settings).number is None
    # The lease runs out (moved back in time here rather than waited for).
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    sweep(settings)
    assert webhooks_sent == [delivery_id]
    attempt = deliver(delivery_id, settings)
    assert (attempt.number, attempt.status) == (2, DeliveryStatus.DELIVERED)
    assert len(receiver.requests) == 1


def test_a_callback_of_a_job_retried_meanwhile_is_not_sent(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    with session_scope() as session:  # what POST .../retry does to a finished job
        session.execute(
            update(Job).where(Job.id == delivery(delivery_id).job_id).values(status="IN_PROGRESS")
        )
    attempt = deliver(delivery_id, get_settings())
    assert (attempt.number, attempt.status) == (1, DeliveryStatus.FAILED)
    assert delivery(delivery_id).last_error == (
        "Not sent: the job is IN_PROGRESS again (it was retried)."
    )
    assert receiver.requests == []


def test_the_task_sends_its_own_retry_with_the_backoff(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.tasks import deliver_webhook

    receiver.answers = [500]
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    retries: list[tuple[str, float | None]] = []
    monkeypatch.setattr(
        queue,
        "send_webhook",
        lambda delivery_id, countdown=None: retries.append((delivery_id, countdown)),
    )
    deliver_webhook(delivery_id)  # the Celery task, run in this process
    # A shortcut only: the due time is in the database too, for the sweeper.
    assert retries == [(delivery_id, 10.0)]
    assert delivery(delivery_id).attempts == 1
    deliver_webhook(delivery_id)  # early (a duplicate message): nothing is due, nothing sent
    assert len(receiver.requests) == 1 and len(retries) == 1


def test_a_deleted_job_takes_its_delivery_along(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    from app import transitions

    delivery_id = finished_job(receiver, sent, webhooks_sent)
    with session_scope() as session:
        transitions.delete_job(session, delivery(delivery_id).job_id)
        assert session.get(WebhookDelivery, delivery_id) is None
    assert deliver(delivery_id, get_settings()).number is None
    assert receiver.requests == []


def test_two_concurrent_deliveries_send_once(
    backend: Backend, sent: SentTasks, webhooks_sent: list[str], receiver: Receiver
) -> None:
    settings = get_settings()
    receiver.delay = 0.5  # the first attempt is still in flight when the second one looks
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    barrier = threading.Barrier(4)
    attempts: list[int | None] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            attempts.append(deliver(delivery_id, settings).number)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(attempts, key=lambda n: n or 0) == [None, None, None, 1]
    assert len(receiver.requests) == 1
    assert delivery(delivery_id).status == DeliveryStatus.DELIVERED


# -- end to end --------------------------------------------------------------------------------


def callback_service(tmp_path: Path) -> Service:
    """The real service with a quick sweeper and a known webhook secret (not started)."""
    from tests.e2e.conftest import Service

    return Service(
        data_dir=tmp_path / "data",
        env={
            "QUIRE_SWEEP_INTERVAL": "2",
            "QUIRE_WEBHOOK_SECRET": "e2e-secret",
            "QUIRE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on 127.0.0.1
        },
        log_path=tmp_path / "service.log",
    )


def submit_with_callback(service: Service, receiver: Receiver, text: str) -> str:
    """A one-document job on the running service, calling the receiver back."""
    response = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", make_zip({"a.docx": make_docx(text)}), "application/zip")},
        data={"callback_url": receiver.url},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


@pytest.mark.e2e
def test_the_real_service_calls_back_and_retries(tmp_path: Path, receiver: Receiver) -> None:
    receiver.answers = [500]  # the first attempt fails; the retry comes 10 s later
    service = callback_service(tmp_path)
    service.start()
    try:
        job_id = submit_with_callback(service, receiver, "Alpha")
        status = service.wait_for_job(
            job_id,
            timeout=120,
            until=lambda s: (
                isinstance(s.get("webhook"), dict) and s["webhook"]["status"] != "PENDING"
            ),
        )
    finally:
        service.stop()
    assert status["status"] == "COMPLETED"
    assert status["webhook"] == {
        "url": receiver.url,
        "event": "job.completed",
        "status": "DELIVERED",
        "attempts": 2,
        "last_error": None,
        "next_attempt_at": None,
        "delivered_at": status["webhook"]["delivered_at"],  # type: ignore[index]
    }
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        assert verify_signature("e2e-secret", request.headers["quire-signature"], request.body)
        assert request.headers["quire-delivery"] == receiver.requests[0].headers["quire-delivery"]
    body = json.loads(receiver.requests[-1].body)
    assert body["job_id"] == job_id and body["status"] == "COMPLETED"
    assert body["download_url"] == f"{service.url}/api/v1/jobs/{job_id}/download"


@pytest.mark.e2e
def test_a_pending_callback_survives_a_restart_that_loses_the_queue(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The retry is due in the database only: the broker's files are wiped while the service is
    down, and the restarted service still delivers the callback."""
    receiver.answers = [500]  # the first attempt fails; the retry is due 10 s later
    service = callback_service(tmp_path)
    service.start()
    try:
        job_id = submit_with_callback(service, receiver, "A")
        service.wait_for_job(
            job_id,
            timeout=120,
            until=lambda s: (
                isinstance(s.get("webhook"), dict)
                and s["webhook"]["attempts"] == 1
                and s["webhook"]["last_error"] == "HTTP 5xx"
            ),
        )
    finally:
        service.stop()
    assert len(receiver.requests) == 1  # stopped before the retry was due
    # Whatever the broker held (the retry's delayed message) is gone with its files.
    shutil.rmtree(tmp_path / "data" / "redis")

    service.start()
    try:
        status = service.wait_for_job(
            job_id,
            timeout=120,
            until=lambda s: s["webhook"]["status"] != "PENDING",  # type: ignore[index]
        )
    finally:
        service.stop()
    webhook = status["webhook"]
    assert isinstance(webhook, dict)
    assert (webhook["status"], webhook["attempts"], webhook["last_error"]) == (
        "DELIVERED",
        2,
        None,
    )
    assert len(receiver.requests) == 2
    assert (
        receiver.requests[0].headers["quire-delivery"]
        == (receiver.requests[1].headers["quire-delivery"])
    )
    assert verify_signature(
        "e2e-secret", receiver.requests[1].headers["quire-signature"], receiver.requests[1].body
    )
