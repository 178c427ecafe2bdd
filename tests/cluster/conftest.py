"""The cluster, started once per module, and the summary line it prints after the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.helpers import Cluster, ClusterSummary, running_cluster

SUMMARY = ClusterSummary()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Each host's own disk is a folder under this one; no host is given another's.
    workdir: Path = tmp_path_factory.mktemp("cluster")
    with running_cluster(workdir) as started:
        yield started


@pytest.fixture
def summary() -> ClusterSummary:
    return SUMMARY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SUMMARY.jobs:
        return
    figure = SUMMARY.scaling
    scaling, rates = "n/a", ""
    if figure is not None:
        scaling = f"{figure.ratio:.2f}"
        rates = (
            f" (one worker host {figure.rate(1):.2f} files/s, two {figure.rate(2):.2f} files/s,"
            f" in {len(figure.windows)} phases taken in turns)"
        )
    terminalreporter.section("cluster")
    terminalreporter.write_line(
        f"cluster: lost={SUMMARY.lost} duplicates={SUMMARY.duplicates} scaling={scaling}{rates}"
    )
    if figure is not None:
        phases = ", ".join(f"{w.hosts}: {w.files / w.seconds:.1f}" for w in figure.windows)
        skipped = f"; left out, a LibreOffice starting: {figure.skipped}" if figure.skipped else ""
        terminalreporter.write_line(f"scaling phases in turns (hosts: files/s): {phases}{skipped}")
