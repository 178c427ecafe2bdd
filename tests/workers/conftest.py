"""A real LibreOffice per test for the worker tests (tests/conftest.py has the module-wide
one, ``module_converter``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.libreoffice.uno import UnoConverter


@pytest.fixture
def converter(tmp_path: Path) -> Iterator[UnoConverter]:
    """One instance for the test, with its profile in the test's folder; closed afterwards."""
    instance = UnoConverter(
        soffice="soffice", profile_root=tmp_path / "profiles", start_timeout=60, restart_after=100
    )
    yield instance
    instance.close()
