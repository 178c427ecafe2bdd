"""A worker says at start whether LibreOffice can be sandboxed on its machine (docs/security.md):
the operator reads it in the worker's first lines, not when the first document fails."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from tests.workers.helpers import BLOCK_LANDLOCK
from workers.runtime import announce_sandbox

REPO = Path(__file__).resolve().parents[2]


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, getattr(r, "event", None) or "") for r in caplog.records]


def test_a_worker_that_can_sandbox_libreoffice_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quire.libreoffice")
    announce_sandbox(Settings(sandbox="on", converter="uno"))  # runs the real probe
    assert (logging.INFO, "libreoffice.sandbox_ready") in events(caplog)


def test_the_sandbox_turned_off_is_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quire.libreoffice")
    announce_sandbox(Settings(sandbox="off", converter="uno"))
    assert events(caplog) == [(logging.WARNING, "libreoffice.sandbox_off")]


def test_a_fake_converter_needs_no_sandbox(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quire.libreoffice")
    announce_sandbox(Settings(sandbox="on", converter="fake"))
    assert events(caplog) == []


# A worker whose kernel answers ENOSYS to Landlock: the refusal is logged at start, with why.
ANNOUNCE_WITHOUT_LANDLOCK = (
    BLOCK_LANDLOCK
    + """
from app.config import Settings
from app.logs import configure_logging
from workers.runtime import announce_sandbox

configure_logging("INFO", "json")
announce_sandbox(Settings(sandbox="on", converter="uno"))
"""
)


def test_a_worker_whose_kernel_refuses_landlock_says_so_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ANNOUNCE_WITHOUT_LANDLOCK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert '"event": "libreoffice.sandbox_unavailable"' in result.stderr
    assert '"level": "ERROR"' in result.stderr
    assert "Function not implemented" in result.stderr
    assert "libreoffice.sandbox_ready" not in result.stderr
