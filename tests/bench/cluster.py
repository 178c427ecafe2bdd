"""``make bench``'s scaling across hosts (issue #17, item 3): the conversion rate of one worker
host against two, each pinned to a core of its own, on the multi-host cluster of the tests.

The cluster, the documents and the measurement are those of ``make test``'s scaling test
(``tests/cluster/helpers.py``: ``running_cluster``, ``bench_batch``, ``measure_scaling``), with
more documents: 1,000 two-page documents by default. Like the test it needs root and iproute2
(network namespaces), and waits for a cluster test that is running. Alone:
``python -m tests.bench.cluster [--cluster-documents N]``; in ``make bench`` it runs last
(``--no-cluster`` skips it, ``--cluster-only`` runs it alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.cluster.helpers import bench_batch, measure_scaling, running_cluster, settle

REPO = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scaling across hosts (issue #17)")
    group.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure one worker host against two on the multi-host cluster (default: on)",
    )
    group.add_argument("--cluster-only", action="store_true", help="run that measurement alone")
    group.add_argument(
        "--cluster-documents", type=int, default=1000, help="documents of the cluster's job"
    )


def measure_cluster(documents: int, pages: int, workdir: Path) -> dict[str, Any]:
    """Start the cluster, convert one job of ``documents`` in phases of one and two worker
    hosts taken in turns, account for every file in its archive, and stop the cluster."""
    load_before = os.getloadavg()
    with running_cluster(workdir) as cluster:
        batch, markers = bench_batch(documents, "bench", pages)
        job_id, figure = measure_scaling(cluster, batch, documents, timeout=1800)
        outcome = settle(cluster, job_id, markers, timeout=1800)
    return {
        "documents": documents,
        "pages": pages,
        "one_host_docs_per_second": figure.rate(1),
        "two_hosts_docs_per_second": figure.rate(2),
        "scaling": figure.ratio,
        "phases": [asdict(window) for window in figure.windows],
        # Phases left out, by their hosts: a LibreOffice (re)started in them.
        "phases_left_out": figure.skipped,
        "status": outcome.status["status"],
        "lost": len(outcome.lost),
        "duplicates": outcome.duplicates,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def render_cluster(result: dict[str, Any]) -> list[str]:
    phases = ", ".join(
        f"{phase['hosts']}: {phase['files'] / phase['seconds']:.1f}" for phase in result["phases"]
    )
    return [
        f"scaling across hosts: {result['documents']} documents x {result['pages']} pages, one "
        f"job; one worker host {result['one_host_docs_per_second']:.2f} docs/s, two "
        f"{result['two_hosts_docs_per_second']:.2f} docs/s: {result['scaling']:.2f} x "
        "(target >= 1.6)",
        f"  phases in turns (hosts: docs/s): {phases}; left out (a LibreOffice starting): "
        f"{result['phases_left_out'] or 'none'}; job {result['status']}, "
        f"lost={result['lost']} duplicates={result['duplicates']}; load average "
        f"{result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} "
        "after",
    ]


def cluster_only(args: argparse.Namespace) -> int:
    """``--cluster-only``: the scaling across hosts alone, reported as ``make bench`` does."""
    workdir = Path(tempfile.mkdtemp(prefix="quire-bench-"))
    try:
        result = measure_cluster(args.cluster_documents, args.pages, workdir / "cluster")
    finally:
        if not os.environ.get("QUIRE_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"pages": args.pages, "cluster": result}, indent=2) + "\n")
    print("\n".join(render_cluster(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2, help="pages per document")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "cluster.json")
    add_arguments(parser)
    return cluster_only(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
