"""Fixtures of the workers' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workers.webhook_helpers import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()
