"""A real, warm LibreOffice for the worker tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.libreoffice import UnoConverter


@pytest.fixture(scope="module")
def module_converter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnoConverter]:
    """One warm instance for a whole module, as a worker process has one for many files."""
    instance = UnoConverter(
        soffice="soffice",
        profile_root=tmp_path_factory.mktemp("profiles"),
        start_timeout=60,
        restart_after=1000,
    )
    yield instance
    instance.close()


@pytest.fixture
def converter(tmp_path: Path) -> Iterator[UnoConverter]:
    """One instance for the test, with its profile in the test's folder; closed afterwards."""
    instance = UnoConverter(
        soffice="soffice", profile_root=tmp_path / "profiles", start_timeout=60, restart_after=100
    )
    yield instance
    instance.close()
