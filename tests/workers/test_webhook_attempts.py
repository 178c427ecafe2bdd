"""QUIRE_WEBHOOK_MAX_ATTEMPTS bounds attempts whose worker died too (killed at its time limit,
say, by a receiver that answers a byte at a time): such an attempt records nothing, its lease
runs out and the sweeper sends the delivery again; after the last one it must end FAILED, not
be tried forever."""

from __future__ import annotations

import pytest

from app.db import session_scope
from app.models import DeliveryStatus
from app.webhooks import claim_attempt, due_deliveries, lease_seconds
from tests.conftest import Backend, SentTasks
from tests.workers.webhook_helpers import (
    Clock,
    Receiver,
    delivery,
    finished_job,
    settings_with,
)
from workers.webhooks import deliver


def test_attempts_whose_worker_died_count_toward_the_limit(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_MAX_ATTEMPTS", "3")
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    clock = Clock()
    lease = lease_seconds(settings)
    for number in (1, 2, 3):  # each worker claims its attempt and dies before recording it
        with session_scope() as session:
            assert claim_attempt(session, delivery_id, clock(), lease) == number
        clock.advance(lease + 1)

    attempt = deliver(delivery_id, settings, clock=clock)
    assert attempt.number is None and receiver.requests == []  # no fourth attempt
    row = delivery(delivery_id)
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 3)
    assert row.next_attempt_at is None and row.last_error
    with session_scope() as session:
        assert due_deliveries(session, clock()) == []  # and the sweeper stops sending it
