"""Webhooks: when a job with a ``callback_url`` ends, its status document is POSTed there.

The database is the queue. The transaction that ends a job also inserts a PENDING delivery due
at once (``schedule_delivery``), whose task is sent after the commit, and the sweeper
sends every delivery that is due and not leased, so a lost message, a crashed worker or a
restart delays a callback but never loses it. Each attempt is claimed by a conditional UPDATE
that leases the row (``claim_attempt``), so two workers never send the same attempt, and its
outcome is recorded only by the worker that holds that attempt (``record_attempt``).

Delivery is at least once (a worker may die after the receiver answered and before the outcome
was recorded): the ``Quire-Delivery`` header is the same for every attempt of one delivery, so
receivers de-duplicate on it.

Signing: ``Quire-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>``.
``verify_signature`` is what a receiver runs; it needs only the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.orm import Session

from app import queue
from app.config import Settings
from app.models import DeliveryStatus, Job, JobStatus, WebhookDelivery, new_id, utcnow
from app.schemas import WebhookStatus

SIGNATURE_HEADER = "Quire-Signature"
EVENT_HEADER = "Quire-Event"
DELIVERY_HEADER = "Quire-Delivery"
EVENTS = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
RETRY_BASE_SECONDS = 10
RETRY_FACTOR = 3
RETRY_CAP_SECONDS = 3600
# A receiver checks the timestamp against its own clock: five minutes absorbs clock skew and a
# slow network, and still refuses a captured request replayed later.
DEFAULT_TOLERANCE = 300


def schedule_delivery(session: Session, job_id: str) -> str | None:
    """Queue the callback of a job that just ended, in the caller's transaction.

    Call it in the same transaction as the UPDATE that ended the job (COMPLETED, FAILED or
    CANCELLED), and only when that UPDATE won, so a repeated ending schedules nothing twice.
    The first attempt's task is sent once that transaction commits (``queue_after_commit``);
    if the broker is away then, the delivery is in the database, due now, and the sweeper sends
    it on its next pass. Returns the new delivery's id; None when the job has no callback_url
    (or has not ended).
    """
    row = session.execute(select(Job.status, Job.callback_url).where(Job.id == job_id)).first()
    if row is None or not row.callback_url or row.status not in EVENTS:
        return None
    delivery_id = new_id()
    now = utcnow()
    session.execute(
        insert(WebhookDelivery).values(
            id=delivery_id,
            job_id=job_id,
            url=row.callback_url,
            event=EVENTS[row.status],
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    queue.queue_after_commit(session, queue.WEBHOOK_TASK, delivery_id)
    return delivery_id


# -- signing ----------------------------------------------------------------------------------


def webhook_secret(settings: Settings) -> str:
    """QUIRE_WEBHOOK_SECRET, or a key derived from the secret key (stable across restarts).

    Derived rather than the secret key itself, so the receivers that must hold it cannot sign
    the local store's download URLs with it. ``python -m app.webhooks`` prints it."""
    if settings.webhook_secret:
        return settings.webhook_secret
    key = settings.resolved_secret_key().encode()
    return hmac.new(key, b"quire webhook signing key", hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Quire-Signature header value of ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when ``header`` (Quire-Signature) signs exactly ``body`` with ``secret``, and its
    timestamp is within ``tolerance`` seconds of ``now`` (default: the current time).

    Pass the body's raw bytes as received, before any JSON parsing. Several ``v1=`` values are
    accepted (any one matching), so a secret can be rotated without a gap."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def headers(
    secret: str, body: bytes, *, event: str, delivery_id: str, timestamp: int
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "Quire-Webhooks/1",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }


# -- attempts, as conditional UPDATEs ---------------------------------------------------------


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): 10, 30, 90, 270,
    810, 2430, then 3600 each."""
    return float(min(RETRY_BASE_SECONDS * RETRY_FACTOR ** (attempt - 1), RETRY_CAP_SECONDS))


def task_soft_time_limit(settings: Settings) -> int:
    # Connecting, sending and waiting for the answer each have the timeout; the rest is the
    # database around them.
    return int(3 * settings.webhook_timeout) + 30


def lease_seconds(settings: Settings) -> float:
    """How long a claimed attempt keeps others off: longer than the task's hard time limit, so
    a lease expires only when its worker is gone (then the sweeper sends the next attempt)."""
    return float(task_soft_time_limit(settings) + 60)


LOST_LAST_ATTEMPT = (
    "The last attempt recorded no outcome (its worker stopped before the answer was written, "
    "e.g. at the task's time limit); no attempts are left."
)


def claim_attempt(
    session: Session,
    delivery_id: str,
    now: datetime,
    lease: float,
    max_attempts: int | None = None,
) -> int | None:
    """Take the next attempt of a due delivery: its number, or None when it is not due (already
    delivered, given up, waiting for its backoff, or leased by another worker).

    With ``max_attempts``, a delivery due again after its last attempt (whose worker died, so
    its lease ran out with nothing recorded) ends FAILED instead: attempts that never reported
    count toward the limit, or a receiver that makes every attempt time out would be tried
    forever."""
    due: tuple[ColumnElement[bool], ...] = (
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
    )
    if max_attempts is not None:
        session.execute(
            update(WebhookDelivery)
            .where(*due, WebhookDelivery.attempts >= max_attempts)
            .values(
                status=DeliveryStatus.FAILED, next_attempt_at=None, last_error=LOST_LAST_ATTEMPT
            )
            .execution_options(synchronize_session=False)
        )
        due = (*due, WebhookDelivery.attempts < max_attempts)
    result = session.execute(
        update(WebhookDelivery)
        .where(*due)
        .values(
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=now,
            next_attempt_at=now + timedelta(seconds=lease),
        )
        .returning(WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none()


@dataclass(frozen=True)
class Outcome:
    """What one attempt got back: an HTTP status, or an error before any answer."""

    status_code: int | None
    error: str | None  # what the job's owner is shown: general terms only (no target details)
    permanent: bool = False  # no later attempt can do better (e.g. an unusable URL)
    detail: str | None = None  # the exact answer or exception, for the worker's log only

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def record_attempt(
    session: Session,
    delivery_id: str,
    attempt: int,
    outcome: Outcome,
    now: datetime,
    max_attempts: int,
) -> DeliveryStatus | None:
    """Write the outcome of attempt ``attempt``: DELIVERED, PENDING again after its backoff, or
    FAILED after the last attempt. Returns the new status, or None when the attempt is no longer
    this caller's (its lease expired and another worker took the next one)."""
    values: dict[str, object] = {
        "last_status_code": outcome.status_code,
        "last_error": None if outcome.delivered else outcome.error,
    }
    if outcome.delivered:
        status = DeliveryStatus.DELIVERED
        values |= {"delivered_at": now, "next_attempt_at": None}
    elif outcome.permanent or attempt >= max_attempts:
        status = DeliveryStatus.FAILED
        values |= {"next_attempt_at": None}
    else:
        status = DeliveryStatus.PENDING
        values |= {"next_attempt_at": now + timedelta(seconds=retry_delay(attempt))}
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == attempt,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return status if getattr(result, "rowcount", 0) else None


def due_deliveries(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """PENDING deliveries whose next attempt is due: never sent, past their backoff, or leased
    by a worker that died (its lease expired). Served by the (status, next_attempt_at) index."""
    rows = session.execute(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(rows.scalars())


def latest_delivery(session: Session, job_id: str) -> WebhookStatus | None:
    """The job's most recent delivery as shown in its status document (one query)."""
    row = session.execute(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        return None
    return WebhookStatus(
        url=row.url,
        event=row.event,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        delivered_at=row.delivered_at,
    )


if __name__ == "__main__":
    # For the operator who sets up a receiver: the key it verifies signatures with.
    from app.config import get_settings

    print(webhook_secret(get_settings()))
