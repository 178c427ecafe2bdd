"""Sending webhook deliveries: one attempt per call, claimed under a lease, signed, recorded.

``deliver`` makes the next attempt of a delivery if one is due. Whether it is due is decided by
the database alone (``app.webhooks.claim_attempt``), so it is safe to call any number of times,
from any worker, at any time: a duplicate message, a sweeper pass and a Celery retry all end up
making at most one attempt each time one is due.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import select

from app.config import Settings
from app.db import session_scope
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.status import status_document_of
from app.storage import ObjectStore, get_store
from app.webhooks import (
    EVENTS,
    Outcome,
    claim_attempt,
    headers,
    lease_seconds,
    record_attempt,
    retry_delay,
    webhook_secret,
)

log = logging.getLogger("quire.webhooks")


def base_url(settings: Settings) -> str:
    """The base of the absolute links in a webhook's body: QUIRE_PUBLIC_URL, or else where
    ``make run`` serves the API (HOST and PORT, as infra/run_embedded.py reads them); a worker
    has no request to take it from."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = os.environ.get("HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: this machine answers
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '8000')}"


@dataclass(frozen=True)
class Attempt:
    """What one call of ``deliver`` did."""

    delivery_id: str
    number: int | None  # the attempt made; None when none was due
    status: DeliveryStatus | None = None  # the delivery's status after it; None: not ours
    outcome: Outcome | None = None
    retry_in: float | None = None  # seconds until the next attempt is due, when there is one


def post(
    url: str,
    body: bytes,
    request_headers: dict[str, str],
    timeout: float,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """POST once; an answer or the error that kept it from coming. Never raises for the
    receiver's faults: they are the delivery's outcome, recorded and retried."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
            request = client.build_request("POST", url, content=body, headers=request_headers)
            # The answer's body is never read: a receiver cannot make a worker download much.
            response = client.send(request, stream=True)
            response.close()
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        return Outcome(None, f"The callback URL cannot be used: {error}", permanent=True)
    except httpx.TimeoutException as error:
        return Outcome(None, f"No answer within {timeout:g} s ({type(error).__name__}).")
    except httpx.HTTPError as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:1000])
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(code, None)
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        return Outcome(code, f"HTTP {code}: redirects are not followed (Location: {location})")
    return Outcome(code, f"HTTP {code} {response.reason_phrase}".strip())


def deliver(
    delivery_id: str,
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    clock: Callable[[], datetime] = utcnow,
    transport: httpx.BaseTransport | None = None,
) -> Attempt:
    """Make the next attempt of a delivery if one is due now, and record its outcome.

    The claim commits before the POST, so the lease holds other workers off while the request
    is in flight and no transaction stays open across the network."""
    with session_scope() as session:
        number = claim_attempt(
            session, delivery_id, clock(), lease_seconds(settings), settings.webhook_max_attempts
        )
        if number is None:
            return Attempt(delivery_id, None)
        row = session.execute(
            select(WebhookDelivery.job_id, WebhookDelivery.url, WebhookDelivery.event).where(
                WebhookDelivery.id == delivery_id
            )
        ).one()
    with session_scope() as session:
        document = status_document_of(
            session,
            row.job_id,
            base_url(settings),
            store or get_store(),
            settings.presigned_url_ttl,
        )
    if document is None:  # deleted meanwhile (its deliveries go with it)
        outcome = Outcome(None, "The job no longer exists.", permanent=True)
    elif EVENTS.get(document.status) != row.event:
        # Retried before this callback got through: its end will send a callback of its own,
        # and this one would announce an ending the document no longer shows.
        outcome = Outcome(
            None,
            f"Not sent: the job is {document.status.value} again (it was retried).",
            permanent=True,
        )
    else:
        # The status document as GET /api/v1/jobs/{id} answers it, built afresh for every
        # attempt so its download links are fresh too; the delivery's own state is left out.
        body = document.model_dump_json(exclude={"webhook"}).encode()
        timestamp = int(clock().timestamp())
        request_headers = headers(
            webhook_secret(settings),
            body,
            event=row.event,
            delivery_id=delivery_id,
            timestamp=timestamp,
        )
        outcome = post(row.url, body, request_headers, settings.webhook_timeout, transport)
    with session_scope() as session:
        status = record_attempt(
            session, delivery_id, number, outcome, clock(), settings.webhook_max_attempts
        )
    retry_in = retry_delay(number) if status == DeliveryStatus.PENDING else None
    _log(status, delivery_id, row.job_id, number, outcome, retry_in)
    return Attempt(delivery_id, number, status, outcome, retry_in)


def _log(
    status: DeliveryStatus | None,
    delivery_id: str,
    job_id: str,
    number: int,
    outcome: Outcome,
    retry_in: float | None,
) -> None:
    args = (delivery_id, job_id, number, outcome.status_code, outcome.error)
    fields = "delivery_id=%s job_id=%s attempt=%d status_code=%s error=%s"
    if status == DeliveryStatus.DELIVERED:
        log.info("webhook.delivered " + fields, *args)
    elif status == DeliveryStatus.PENDING:
        log.warning("webhook.retry " + fields + " retry_in=%s", *args, retry_in)
    elif status == DeliveryStatus.FAILED:
        log.warning("webhook.failed " + fields, *args)
    else:  # the lease expired mid-attempt and another worker took the next attempt
        log.warning("webhook.superseded " + fields, *args)
