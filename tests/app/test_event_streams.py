"""At most QUIRE_MAX_EVENT_STREAMS_PER_KEY open event streams per caller (#12): 429 past it,
and a stream's slot comes back when it ends or its client goes away. Through a real uvicorn
server, since a client's disconnect is part of what is under test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from app.config import get_settings
from app.db import session_scope
from app.main import create_app
from app.transitions import fail_job
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.hostile_inputs import live_server

LIMIT = 3


@pytest.fixture
def server(backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(get_settings(), "max_event_streams_per_key", LIMIT)
    with live_server(create_app()) as url:
        yield url


def submit(client: httpx.Client, url: str) -> str:
    """A job that stays PENDING (the broker is captured), so its stream stays open."""
    data = make_zip({"a.docx": make_docx("a")})
    response = client.post(f"{url}/api/v1/jobs", files={"file": ("a.zip", data)})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def open_stream(stack: ExitStack, client: httpx.Client, url: str, job_id: str) -> httpx.Response:
    """A stream opened (its status and headers read) and kept open until ``stack`` closes."""
    return stack.enter_context(client.stream("GET", f"{url}/api/v1/jobs/{job_id}/events"))


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429
    response.read()
    assert f"at most {LIMIT} at once" in response.json()["error"]["message"]
    assert response.headers["retry-after"] == "5"


def reopened_when_a_slot_frees(client: httpx.Client, url: str, job_id: str) -> ExitStack:
    """Open one more stream as soon as the server has given a slot back (it notices a client's
    disconnect asynchronously); fails if it never does."""
    deadline = time.monotonic() + 30
    while True:
        stack = ExitStack()
        response = open_stream(stack, client, url, job_id)
        if response.status_code == 200:
            return stack
        stack.close()
        assert response.status_code == 429
        assert time.monotonic() < deadline, "the closed stream's slot never came back"
        time.sleep(0.05)


def test_streams_past_the_limit_are_429_per_client_address_and_come_back_on_disconnect(
    server: str,
) -> None:
    with httpx.Client(timeout=30) as client, ExitStack() as held:
        job_id = submit(client, server)
        streams = [ExitStack() for _ in range(LIMIT)]
        for stack in streams:
            held.enter_context(stack)
            assert open_stream(stack, client, server, job_id).status_code == 200
        with ExitStack() as extra:
            assert_refused(open_stream(extra, client, server, job_id))

        # Without API keys each client address counts alone: another one is not refused.
        other = httpx.Client(timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with other, ExitStack() as elsewhere:
            assert open_stream(elsewhere, other, server, job_id).status_code == 200

        # A client that goes away gives its slot back.
        streams[0].close()
        held.enter_context(reopened_when_a_slot_frees(client, server, job_id))
        with ExitStack() as extra:
            assert_refused(open_stream(extra, client, server, job_id))


def test_with_api_keys_each_key_has_its_own_streams(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "api_keys", "alice-key,bob-key")
    alice = httpx.Client(timeout=30, headers={"Authorization": "Bearer alice-key"})
    bob = httpx.Client(timeout=30, headers={"Authorization": "Bearer bob-key"})
    with alice, bob, ExitStack() as held:
        alice_job, bob_job = submit(alice, server), submit(bob, server)
        for _ in range(LIMIT):
            assert open_stream(held, alice, server, alice_job).status_code == 200
        with ExitStack() as extra:
            assert_refused(open_stream(extra, alice, server, alice_job))
        # Same address, another key: not refused.
        assert open_stream(held, bob, server, bob_job).status_code == 200


def test_a_stream_that_ends_with_its_job_gives_its_slot_back(server: str) -> None:
    with httpx.Client(timeout=30) as client:
        job_id = submit(client, server)
        with session_scope() as session:
            fail_job(session, job_id, "Stopped by the test.")
        for _ in range(2 * LIMIT):  # one after another, each read to its end
            response = client.get(f"{server}/api/v1/jobs/{job_id}/events")
            assert response.status_code == 200
            assert "event: job" in response.text
