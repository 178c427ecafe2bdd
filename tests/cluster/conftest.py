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
    scaling = "n/a" if SUMMARY.scaling is None else f"{SUMMARY.scaling:.2f}"
    rates = ""
    if SUMMARY.one_host_rate is not None and SUMMARY.two_hosts_rate is not None:
        rates = (
            f" (one worker host {SUMMARY.one_host_rate:.2f} files/s,"
            f" two {SUMMARY.two_hosts_rate:.2f} files/s)"
        )
    terminalreporter.section("cluster")
    terminalreporter.write_line(
        f"cluster: lost={SUMMARY.lost} duplicates={SUMMARY.duplicates} scaling={scaling}{rates}"
    )
