"""A worker sends a callback only to a public address, the very one it checked, and tells the
job's owner nothing about the target beyond the class of what happened.

Every connection here goes to a receiver on 127.0.0.1, or nowhere: the public addresses in
these tests are handed to httpx's MockTransport, which connects to nothing, and names are
resolved by a stub, never by DNS.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app import callback_targets
from app.db import session_scope
from app.models import DeliveryStatus, WebhookDelivery
from tests.conftest import Backend, SentTasks
from tests.hostile_inputs_webhooks import ssrf_callback_urls
from tests.services import free_port
from tests.workers.webhook_helpers import (
    Receiver,
    delivery,
    finished_job,
    settings_with,
)
from workers.webhooks import NOT_PUBLIC, deliver, post

BODY = b'{"status": "COMPLETED"}'
HEADERS = {"Content-Type": "application/json"}
PUBLIC = "93.184.215.14"  # handed to MockTransport only: nothing connects to it


def stub_resolver(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]
) -> list[str]:
    """Resolve each name to its next list of addresses (the last one repeats); returns the
    names asked, in order."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        rounds = answers[host]
        addresses = rounds.pop(0) if len(rounds) > 1 else rounds[0]
        result = []
        for address in addresses:
            family = socket.AF_INET6 if ip_address(address).version == 6 else socket.AF_INET
            result.append((family, socket.SOCK_STREAM, 6, "", (address, port)))
        return result

    monkeypatch.setattr(callback_targets, "getaddrinfo", getaddrinfo)
    return asked


def recording_transport(status: int = 200) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status)

    return httpx.MockTransport(handle), requests


# -- refused without connecting ----------------------------------------------------------------


@pytest.mark.parametrize("url", ssrf_callback_urls())
def test_a_worker_refuses_every_hostile_url_without_sending(url: str) -> None:
    transport, requests = recording_transport()
    outcome = post(url, BODY, HEADERS, 5, transport)
    assert (outcome.error, outcome.permanent, outcome.status_code) == (NOT_PUBLIC, True, None)
    assert requests == []
    assert outcome.detail and "not a public address" in outcome.detail  # for the log


def test_a_name_with_one_private_address_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client would pick one of them; an attacker's DNS decides which.
    stub_resolver(monkeypatch, {"hooks.test": [[PUBLIC, "10.0.0.7"]]})
    transport, requests = recording_transport()
    outcome = post("https://hooks.test/quire", BODY, HEADERS, 5, transport)
    assert outcome.error == NOT_PUBLIC and requests == []


def test_the_connection_goes_to_the_checked_address_under_the_original_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DNS rebinding: public when checked, loopback for whoever asks next. Only one answer is
    # ever asked for, and the request goes to the address it gave.
    asked = stub_resolver(monkeypatch, {"hooks.test": [[PUBLIC], ["127.0.0.1"]]})
    transport, requests = recording_transport()
    outcome = post("https://hooks.test:8443/quire?x=1", BODY, HEADERS, 5, transport)
    assert outcome.status_code == 200 and outcome.error is None
    assert asked == ["hooks.test"]
    (request,) = requests
    assert (request.url.host, request.url.port, request.url.raw_path) == (
        PUBLIC,
        8443,
        b"/quire?x=1",
    )
    assert request.headers["host"] == "hooks.test:8443"
    assert request.extensions["sni_hostname"] == "hooks.test"  # TLS checks the name, too


def test_a_rebinding_name_reaches_only_the_receiver_it_resolved_to_first(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    # With private addresses allowed, a real connection: the name answers 127.0.0.1 (the
    # receiver) once, then 127.0.0.2, where nothing listens (the receiver binds 127.0.0.1).
    assert receiver.server is not None
    port = receiver.server.server_port
    asked = stub_resolver(monkeypatch, {"hooks.test": [["127.0.0.1"], ["127.0.0.2"]]})
    outcome = post(f"http://hooks.test:{port}/hooks/quire", BODY, HEADERS, 5, allow_private=True)
    assert outcome.status_code == 200, outcome.detail
    assert asked == ["hooks.test"]
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.test:{port}"
    assert request.path == "/hooks/quire"


def test_an_unresolvable_name_is_a_retryable_connection_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub_resolver(monkeypatch, {})
    transport, requests = recording_transport()
    outcome = post("https://nowhere.test/", BODY, HEADERS, 5, transport)
    assert (outcome.error, outcome.permanent) == ("connection failed", False)
    assert requests == []


def test_a_delivery_to_a_loopback_receiver_fails_unless_private_addresses_are_allowed(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The URL got into the database without the API's check (an older release accepted it):
    # the worker's own check stops it, and the receiver, listening, gets nothing.
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_ALLOW_PRIVATE", "false")
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    attempt = deliver(delivery_id, settings)
    assert (attempt.number, attempt.status) == (1, DeliveryStatus.FAILED)  # permanent
    assert delivery(delivery_id).last_error == NOT_PUBLIC
    assert receiver.requests == []


# -- what the job's owner is told --------------------------------------------------------------


@pytest.fixture
def answered(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[int], tuple[str | None, int | None, str]]:
    """Deliver once to the receiver answering ``code``: (the error the job's owner is shown,
    the status code recorded for the operator, the worker's log)."""
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_ALLOW_PRIVATE", "true")

    def run(code: int) -> tuple[str | None, int | None, str]:
        receiver.answers = [code]
        receiver.location = "http://10.1.2.3:8080/internal/secret-path"
        delivery_id = finished_job(receiver, sent, webhooks_sent)
        webhooks_sent.clear()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="quire.webhooks"):
            deliver(delivery_id, settings)
        row = delivery(delivery_id)
        return row.last_error, row.last_status_code, caplog.text

    return run


@pytest.mark.parametrize(
    ("code", "shown", "logged"),
    [
        (500, "HTTP 5xx", "HTTP 500 Internal Server Error"),
        (503, "HTTP 5xx", "HTTP 503 Service Unavailable"),
        (404, "HTTP 4xx", "HTTP 404 Not Found"),
        (401, "HTTP 4xx", "HTTP 401 Unauthorized"),
        (302, "HTTP 3xx: redirects are not followed", "/internal/secret-path"),
    ],
)
def test_the_owner_sees_the_class_and_the_log_keeps_the_answer(
    answered: Callable[[int], tuple[str | None, int | None, str]],
    code: int,
    shown: str,
    logged: str,
) -> None:
    error, recorded, log = answered(code)
    assert error == shown
    assert recorded == code  # kept for the operator, not shown in the status document
    assert logged in log


def test_a_refused_connection_is_only_a_connection_failure(
    backend: Backend,
    sent: SentTasks,
    webhooks_sent: list[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_with(monkeypatch, "QUIRE_WEBHOOK_ALLOW_PRIVATE", "true")
    delivery_id = finished_job(receiver, sent, webhooks_sent)
    with session_scope() as session:  # a port where nothing listens: a port scan's probe
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(url=f"http://127.0.0.1:{free_port()}/")
        )
    with caplog.at_level(logging.INFO, logger="quire.webhooks"):
        deliver(delivery_id, settings)
    row = delivery(delivery_id)
    assert row.last_error == "connection failed"
    assert "ConnectError" in caplog.text  # the operator still sees what happened
