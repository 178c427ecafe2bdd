"""Fixtures of the workers' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workers.webhook_helpers import Receiver
from workers.libreoffice import profile


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unprotected(monkeypatch: pytest.MonkeyPatch) -> None:
    """LibreOffice with its stock configuration: none of the profile's settings."""
    monkeypatch.setattr(profile, "PROFILE_SETTINGS", ())
    monkeypatch.setattr(profile, "NETWORK_PROVIDERS", {})
    monkeypatch.setattr(profile, "OTHER_NETWORK_SCHEMES", ())
