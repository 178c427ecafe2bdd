"""Sending webhook deliveries: one attempt per call, claimed under a lease, signed, recorded.

``deliver`` makes the next attempt of a delivery if one is due. Whether it is due is decided by
the database alone (``app.webhooks.claim_attempt``), so it is safe to call any number of times,
from any worker, at any time: a duplicate message, a sweeper pass and a Celery retry all end up
making at most one attempt each time one is due.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select

from app import tracing
from app.callback_targets import TargetRefused, literal_address, resolve_target
from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
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

log = get_logger("quire.webhooks")


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


# At most this many of a name's addresses are tried, each one checked, in the resolver's order.
MAX_ADDRESSES = 4
NOT_PUBLIC = "Not sent: the callback URL's host is not a public address."
UNUSABLE = "Not sent: the callback URL cannot be used."


def post(
    url: str,
    body: bytes,
    request_headers: dict[str, str],
    timeout: float,
    transport: httpx.BaseTransport | None = None,
    *,
    allow_private: bool = False,
) -> Outcome:
    """POST once; an answer or the error that kept it from coming. Never raises for the
    receiver's faults: they are the delivery's outcome, recorded and retried.

    The host is resolved here once, every address checked (``resolve_target``), and the
    connection goes to a checked address with the original name in the Host header and in
    TLS (SNI and certificate check), so a second DNS answer can never redirect it. The
    outcome's ``error`` is what the job's owner sees: general terms only."""
    try:
        target = resolve_target(url, allow_private)
    except TargetRefused as error:
        return Outcome(None, NOT_PUBLIC, permanent=True, detail=str(error))
    except (OSError, UnicodeError) as error:  # socket.gaierror: the name does not resolve now
        return Outcome(None, "connection failed", detail=f"resolving the host: {error}")
    try:
        original = httpx.URL(url)
    except httpx.InvalidURL as error:
        return Outcome(None, UNUSABLE, permanent=True, detail=str(error))
    headers = {**request_headers, "Host": original.netloc.decode("ascii")}
    # TLS is checked against the name the client gave, not the address connected to.
    sni = {} if literal_address(target.host) else {"sni_hostname": original.raw_host.decode()}
    outcome = Outcome(None, "connection failed", detail="no address to connect to")
    for address in target.addresses[:MAX_ADDRESSES]:
        outcome = _post_to(
            original.copy_with(host=str(address)), body, headers, sni, timeout, transport
        )
        if outcome.error != "connection failed":
            break  # an answer, a timeout or an unusable URL: another address would not help
    return outcome


def _post_to(
    pinned: httpx.URL,
    body: bytes,
    headers: dict[str, str],
    extensions: dict[str, str],
    timeout: float,
    transport: httpx.BaseTransport | None,
) -> Outcome:
    try:
        # trust_env=False: a proxy from the environment would connect by name, unchecked.
        with httpx.Client(
            timeout=timeout, follow_redirects=False, transport=transport, trust_env=False
        ) as client:
            request = client.build_request(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            )
            # The answer's body is never read: a receiver cannot make a worker download much.
            response = client.send(request, stream=True)
            response.close()
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        return Outcome(None, UNUSABLE, permanent=True, detail=str(error))
    except httpx.TimeoutException as error:
        return Outcome(None, "timed out", detail=f"{pinned.host}: {type(error).__name__}")
    except httpx.HTTPError as error:
        detail = f"{pinned.host}: {type(error).__name__}: {error}"[:1000]
        return Outcome(None, "connection failed", detail=detail)
    code = response.status_code
    detail = f"{pinned.host}: HTTP {code} {response.reason_phrase}".strip()
    if 200 <= code < 300:
        return Outcome(code, None, detail=detail)
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        return Outcome(
            code,
            "HTTP 3xx: redirects are not followed",
            detail=f"{detail} (Location: {location})"[:1000],
        )
    return Outcome(code, f"HTTP {code // 100}xx", detail=detail)


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
    with tracing.span("webhook.deliver", delivery_id=delivery_id):
        return _deliver(delivery_id, settings, store, clock, transport)


def _deliver(
    delivery_id: str,
    settings: Settings,
    store: ObjectStore | None,
    clock: Callable[[], datetime],
    transport: httpx.BaseTransport | None,
) -> Attempt:
    with session_scope() as session:
        number = claim_attempt(
            session, delivery_id, clock(), lease_seconds(settings), settings.webhook_max_attempts
        )
        if number is None:
            tracing.annotate(outcome="not_due")
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
        outcome = post(
            row.url,
            body,
            request_headers,
            settings.webhook_timeout,
            transport,
            allow_private=settings.webhook_allow_private,
        )
    with session_scope() as session:
        status = record_attempt(
            session, delivery_id, number, outcome, clock(), settings.webhook_max_attempts
        )
    retry_in = retry_delay(number) if status == DeliveryStatus.PENDING else None
    tracing.annotate(
        job_id=row.job_id,
        attempt=number,
        # delivered, pending (a retry is due) or failed; superseded: another worker took over
        outcome=status.value.lower() if status is not None else "superseded",
        status_code=outcome.status_code,
        error=outcome.error,
    )
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
    # The detail (exact status, exception text, Location) is for the operator's log only.
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "job_id": job_id,
        "attempt": number,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "detail": outcome.detail,
    }
    if status == DeliveryStatus.DELIVERED:
        log.info("webhook.delivered", **fields)
    elif status == DeliveryStatus.PENDING:
        log.warning("webhook.retry", **fields, retry_in=retry_in)
    elif status == DeliveryStatus.FAILED:
        log.warning("webhook.failed", **fields)
    else:  # the lease expired mid-attempt and another worker took the next attempt
        log.warning("webhook.superseded", **fields)
