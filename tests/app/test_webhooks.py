"""Webhooks in the app layer: signing, scheduling in the job's own transaction, the recorded
attempts, and the ``webhook`` field of the status document (through the API, both backends).

Sending to a real receiver is tested in tests/workers/test_webhooks.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from app import callback_targets, queue, transitions, webhooks
from app.config import Settings, get_settings
from app.db import get_engine, session_scope
from app.models import DeliveryStatus, Job, JobStatus, WebhookDelivery, utcnow
from app.webhooks import (
    Outcome,
    claim_attempt,
    record_attempt,
    retry_delay,
    schedule_delivery,
    sign,
    verify_signature,
    webhook_secret,
)
from tests.app.helpers import post_zip
from tests.conftest import Backend
from tests.docx_factory import make_docx, make_zip

SECRET = "whsec-test"
BODY = b'{"job_id": "7d9f", "status": "COMPLETED"}'


# -- signing -----------------------------------------------------------------------------------


def test_a_signature_verifies_only_the_same_body_secret_and_recent_time() -> None:
    header = sign(SECRET, BODY, 1_800_000_000)
    mac = hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={mac}"  # the documented construction, nothing else
    assert verify_signature(SECRET, header, BODY, now=1_800_000_000)
    assert verify_signature(SECRET, header, BODY, now=1_800_000_299)
    assert not verify_signature(SECRET, header, BODY, now=1_800_000_301)  # replayed later
    assert not verify_signature(SECRET, header, BODY, now=1_799_999_699)  # from the future
    assert not verify_signature(SECRET, header, BODY + b" ", now=1_800_000_000)
    assert not verify_signature("other", header, BODY, now=1_800_000_000)
    # The timestamp is signed too: moving it breaks the signature.
    moved = header.replace("t=1800000000", "t=1800000100")
    assert not verify_signature(SECRET, moved, BODY, now=1_800_000_100)


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=00", "v1=00", "t=1800000000", "t=1800000000,v0=00", "t=-5,v1=00"],
)
def test_a_malformed_signature_header_is_refused(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, now=1_800_000_000)


def test_any_of_several_signatures_may_match_during_a_rotation() -> None:
    good = sign(SECRET, BODY, 1_800_000_000).split(",")[1]
    header = f"t=1800000000,v1={'0' * 64},{good}"
    assert verify_signature(SECRET, header, BODY, now=1_800_000_000)


def test_the_secret_is_derived_from_the_secret_key_unless_set() -> None:
    derived = webhook_secret(Settings(secret_key="key-one"))
    assert derived == webhook_secret(Settings(secret_key="key-one"))  # stable across restarts
    assert derived != webhook_secret(Settings(secret_key="key-two"))
    assert derived != "key-one"  # receivers hold it: it must not sign download URLs
    assert webhook_secret(Settings(secret_key="key-one", webhook_secret="mine")) == "mine"


def test_the_retry_schedule() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [10, 30, 90, 270, 810, 2430, 3600, 3600]


# -- scheduling and attempts -------------------------------------------------------------------


def make_job(callback_url: str | None = "https://example.com/hook") -> str:
    with session_scope() as session:
        job = Job(
            file_count=0,
            upload_bytes=1,
            callback_url=callback_url,
            status=JobStatus.IN_PROGRESS,
        )
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.parametrize(
    ("status", "event_name"),
    [
        (JobStatus.COMPLETED, "job.completed"),
        (JobStatus.FAILED, "job.failed"),
        (JobStatus.CANCELLED, "job.cancelled"),
    ],
)
def test_a_delivery_is_scheduled_with_the_event_of_the_job_s_end(
    backend: Backend, status: JobStatus, event_name: str
) -> None:
    job_id = make_job()
    with session_scope() as session:
        session.get(Job, job_id).status = status  # type: ignore[union-attr]
    before = utcnow()
    with session_scope() as session:
        delivery_id = schedule_delivery(session, job_id)
    assert delivery_id is not None
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert (row.job_id, row.url, row.event) == (job_id, "https://example.com/hook", event_name)
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
        # Due at once.
        assert webhooks.due_deliveries(session, utcnow()) == [delivery_id]
        assert webhooks.due_deliveries(session, before - timedelta(seconds=1)) == []


def test_nothing_is_scheduled_without_a_callback_or_before_the_end(backend: Backend) -> None:
    with session_scope() as session:
        assert schedule_delivery(session, make_job(callback_url=None)) is None
        running = make_job()
        assert schedule_delivery(session, running) is None  # IN_PROGRESS: not ended
        assert schedule_delivery(session, "no-such-job") is None
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_the_delivery_is_part_of_the_transaction_that_ends_the_job(backend: Backend) -> None:
    job_id = make_job()
    with pytest.raises(RuntimeError), session_scope() as session:
        assert transitions.fail_job(session, job_id, "broke")
        assert schedule_delivery(session, job_id) is not None
        raise RuntimeError("the transaction rolls back")
    with session_scope() as session:
        assert session.get(Job, job_id).status == JobStatus.IN_PROGRESS  # type: ignore[union-attr]
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_a_broker_outage_after_commit_is_only_a_delay(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(delivery_id: str, countdown: float | None = None) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue, "send_webhook", broker_down)
    # The scope does not raise: the sweeper sends the delivery later.
    with caplog.at_level(logging.WARNING, "quire.webhooks"), session_scope() as session:
        queue.queue_after_commit(session, queue.WEBHOOK_TASK, "some-delivery")
    assert [r.getMessage() for r in caplog.records] == [
        "webhook.enqueue_failed delivery_id=some-delivery"
    ]


def failed_job_delivery() -> str:
    """The delivery scheduled for a job that just failed."""
    job_id = make_job()
    with session_scope() as session:
        transitions.fail_job(session, job_id, "broke")
        delivery_id = schedule_delivery(session, job_id)
    assert delivery_id is not None
    return delivery_id


def test_only_the_holder_of_an_attempt_records_its_outcome(backend: Backend) -> None:
    delivery_id = failed_job_delivery()
    now = utcnow()
    with session_scope() as session:
        assert claim_attempt(session, delivery_id, now, lease=60) == 1
        assert claim_attempt(session, delivery_id, now, lease=60) is None  # leased
    later = now + timedelta(seconds=61)  # the first worker vanished; its lease ran out
    with session_scope() as session:
        assert claim_attempt(session, delivery_id, later, lease=60) == 2
    with session_scope() as session:
        late = Outcome(200, None)
        assert record_attempt(session, delivery_id, 1, late, later, max_attempts=8) is None
        failed = Outcome(None, "ConnectError: refused")
        assert (
            record_attempt(session, delivery_id, 2, failed, later, max_attempts=8)
            == DeliveryStatus.PENDING
        )
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert (row.status, row.attempts, row.last_error) == (
            DeliveryStatus.PENDING,
            2,
            "ConnectError: refused",
        )


def test_a_permanent_error_fails_at_once(backend: Backend) -> None:
    delivery_id = failed_job_delivery()
    now = utcnow()
    with session_scope() as session:
        assert claim_attempt(session, delivery_id, now, lease=60) == 1
        outcome = Outcome(None, "The callback URL cannot be used", permanent=True)
        status = record_attempt(session, delivery_id, 1, outcome, now, max_attempts=8)
    assert status == DeliveryStatus.FAILED


# -- the status document -----------------------------------------------------------------------


def queries_of(client: TestClient, url: str) -> tuple[dict[str, object], int]:
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        body = client.get(url).json()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return body, len(statements)


def test_the_status_document_shows_the_delivery(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "send_webhook", lambda delivery_id, countdown=None: None)
    # The submission resolves the callback's host: answered here, without DNS, by a public
    # address nothing connects to.
    monkeypatch.setattr(
        callback_targets,
        "getaddrinfo",
        lambda host, port, **_: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))
        ],
    )
    data = make_zip({"a.docx": make_docx("Alpha")})
    plain = post_zip(client, data).json()["job_id"]
    response = client.post(
        "/api/v1/jobs",
        files={"file": ("batch.zip", data, "application/zip")},
        data={"callback_url": "https://example.com/hooks/quire"},
    )
    assert response.status_code == 202, response.text
    hooked = response.json()["job_id"]

    body, plain_queries = queries_of(client, f"/api/v1/jobs/{plain}")
    assert body["webhook"] is None
    body, hooked_queries = queries_of(client, f"/api/v1/jobs/{hooked}")
    assert body["webhook"] is None  # not ended: nothing scheduled yet
    assert hooked_queries == plain_queries + 1  # one query more, only for a job with a callback

    with session_scope() as session:
        transitions.fail_job(session, hooked, "The upload could not be unpacked.")
        delivery_id = schedule_delivery(session, hooked)
    assert delivery_id is not None
    webhook = client.get(f"/api/v1/jobs/{hooked}").json()["webhook"]
    assert webhook.pop("next_attempt_at").endswith("Z")  # UTC, also from SQLite
    assert webhook == {
        "url": "https://example.com/hooks/quire",
        "event": "job.failed",
        "status": "PENDING",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
    }

    now = utcnow()
    with session_scope() as session:
        assert claim_attempt(session, delivery_id, now, lease=60) == 1
        outcome = Outcome(503, "HTTP 5xx", detail="HTTP 503 Service Unavailable")
        record_attempt(session, delivery_id, 1, outcome, now, 8)
    webhook = client.get(f"/api/v1/jobs/{hooked}").json()["webhook"]
    assert (webhook["status"], webhook["attempts"]) == ("PENDING", 1)
    # The class only: the exact status and its text stay in the database and the log.
    assert webhook["last_error"] == "HTTP 5xx"
    assert "last_status_code" not in webhook
    assert webhook["next_attempt_at"] is not None


def test_a_callback_url_must_be_http_or_https(client: TestClient) -> None:
    response = client.post(
        "/api/v1/jobs",
        files={"file": ("batch.zip", make_zip({"a.docx": make_docx("A")}), "application/zip")},
        data={"callback_url": "file:///etc/passwd"},
    )
    assert response.status_code in (400, 422), response.text
    assert "callback_url" in response.json()["error"]["message"]
    assert get_settings().webhook_max_attempts == 8  # the documented default
