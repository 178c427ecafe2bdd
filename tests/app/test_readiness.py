"""GET /readyz names the dependency that is down, and nothing about why (issue 12): the
exception's text (hosts, ports, URLs with credentials) goes to the log."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from app import queue
from app.config import get_settings


def test_a_dependency_that_is_down_is_named_without_its_error(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(get_settings(), "broker_url", "redis://:hunter2@127.0.0.1:1/0")
    queue.get_sender.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="quire.api"):
            response = client.get("/readyz")
    finally:
        queue.get_sender.cache_clear()
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert message == "Not ready: database ok, broker down, store ok"
    for leak in ("127.0.0.1", "hunter2", "Error", "refused", ":1"):
        assert leak not in response.text
    assert "readyz.down dependency=broker" in caplog.text  # the operator's copy


def test_all_up_is_ok(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
