"""Quire as separate hosts (issue #17): a job through two API replicas and two worker hosts that
share no disk, and the same job surviving host-scale faults, each file's PDF once in the archive.

The cluster (tests/cluster/helpers.py) starts once for this module; each test injects one fault
and leaves every host running again for the next.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.cluster.helpers import (
    S3_PORT,
    WORKER_CPUS,
    Cluster,
    ClusterSummary,
    Outcome,
    bench_batch,
    conversions_recorded,
    frozen_holding_claim,
    measure_scaling,
    namespace_pids,
    settle,
    submit,
    wait,
    wait_until,
)
from tests.docx_factory import make_docx, make_zip
from tests.services import cmdline

pytestmark = pytest.mark.cluster

# Documents per job: the 300 (make bench runs 1,000).
DOCUMENTS = 300
# How long the partition test cuts a worker host's link, per the issue.
PARTITION_SECONDS = 20
# Documents of the scaling test's job (two-page bench documents, as make bench converts),
# converted on one worker host and on two in turns; make bench measures 1,000
# (tests/bench/cluster.py).
SCALING_DOCUMENTS = 400


def text_batch(count: int, tag: str) -> tuple[bytes, dict[str, str]]:
    """A zip of ``count`` documents, each with its own text: entry name -> that text."""
    markers = {f"{tag}/doc-{i:03}.docx": f"{tag} document {i}" for i in range(count)}
    return make_zip({name: make_docx(text) for name, text in markers.items()}), markers


def account(summary: ClusterSummary, outcome: Outcome, cluster: Cluster) -> None:
    summary.jobs += 1
    summary.lost += len(outcome.lost)
    summary.duplicates += outcome.duplicates
    logs = cluster.logs("api-1", "api-2", "worker-1", "worker-2", "beat")
    assert outcome.status["status"] == "COMPLETED", (outcome.status["error_message"], logs)
    assert not outcome.lost, f"lost: {sorted(outcome.lost)[:5]}\n{logs}"
    assert outcome.duplicates == 0
    assert outcome.server_errors == 0
    # The client asked both replicas about the job, in turn.
    assert all(count > 0 for count in outcome.polls.values()), outcome.polls


def events(text: str, name: str) -> list[dict[str, object]]:
    """The JSON log records called ``name`` in a host's log text."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            with_fields: dict[str, object] = json.loads(line)
            if with_fields.get("event") == name:
                found.append(with_fields)
    return found


def handed_over(cluster: Cluster, offsets: dict[str, int]) -> int:
    """Files the sweeper found under a lease that ran out (held by a dead or cut-off host) and
    sent again, since ``offsets`` of the workers' logs: the sweep runs as a task on whichever
    worker host takes it."""
    return sum(
        int(str(record.get("files", 0))) + int(str(record.get("unacked", 0)))
        for name, offset in offsets.items()
        for record in events(cluster.hosts[name].log_since(offset), "sweep.lease_expired")
    )


def log_offsets(cluster: Cluster) -> dict[str, int]:
    return {name: cluster.hosts[name].log_size() for name in ("worker-1", "worker-2")}


def start_mid_job(cluster: Cluster, tag: str, api: int) -> tuple[str, dict[str, str], int]:
    """Submit a batch and return once worker-1 has converted some of it: the job is running
    on both hosts. Returns the job id, its markers and worker-1's log offset at the start."""
    data, markers = text_batch(DOCUMENTS, tag)
    worker_1 = cluster.hosts["worker-1"]
    offset = worker_1.log_size()
    job_id = submit(cluster, data, api)
    wait_until(
        lambda: conversions_recorded(worker_1.log_since(offset)) >= 3,
        "worker-1 converting the job",
        lambda: cluster.logs("worker-1", "worker-2"),
    )
    status = wait(cluster, job_id, "completed>=1")["status"]
    assert status["progress"]["percent"] < 100, "the job ended before the fault"
    return job_id, markers, offset


def restart_worker(cluster: Cluster, name: str) -> None:
    cluster.start_worker(name)
    cluster.wait_registered(name)


def test_job_through_two_replicas_and_two_worker_hosts(
    cluster: Cluster, summary: ClusterSummary
) -> None:
    data, markers = text_batch(DOCUMENTS, "plain")
    offsets = log_offsets(cluster)
    job_id = submit(cluster, data, api=0)
    outcome = settle(cluster, job_id, markers)
    account(summary, outcome, cluster)
    # Both worker hosts converted part of it, and the archive came from the store's host.
    for name, offset in offsets.items():
        assert conversions_recorded(cluster.hosts[name].log_since(offset)) > 0, cluster.logs(name)
    store = cluster.hosts["s3"].address
    assert outcome.archive_url.startswith(f"http://{store}:{S3_PORT}/"), outcome.archive_url


def test_worker_host_lost_mid_job(cluster: Cluster, summary: ClusterSummary) -> None:
    offsets = log_offsets(cluster)
    job_id, markers, _ = start_mid_job(cluster, "loss", api=1)
    worker_1 = cluster.hosts["worker-1"]
    # The cord is pulled while worker-1 converts a file. Pulled between two files (its last one
    # recorded, the next not yet received), it would hold nothing, nothing would be handed
    # over, and the check below would fail on a cluster that did nothing wrong.
    with frozen_holding_claim(cluster, "worker-1", job_id) as (file_id, token):
        running = {pid: cmdline(pid) for pid in namespace_pids(worker_1.namespace)}
        assert any("soffice" in line for line in running.values()), running
        worker_1.kill_all()  # the power cord: Celery, its pool and LibreOffice at once
    assert namespace_pids(worker_1.namespace) == []
    try:
        outcome = settle(cluster, job_id, markers)
        account(summary, outcome, cluster)
        # worker-2 took over what worker-1 held once its lease ran out: the file worker-1 was
        # converting was claimed anew and recorded under the new claim.
        status, final_token = cluster.claim_of(file_id)
        assert status == "COMPLETED" and final_token != token, (status, final_token, token)
        assert handed_over(cluster, offsets) > 0, cluster.logs("worker-2", "beat")
    finally:
        restart_worker(cluster, "worker-1")


def test_worker_host_partitioned_mid_job(cluster: Cluster, summary: ClusterSummary) -> None:
    offsets = log_offsets(cluster)
    job_id, markers, _ = start_mid_job(cluster, "partition", api=0)
    worker_1 = cluster.hosts["worker-1"]
    # Cut while it converts a file, outside a database transaction. Cut inside one, its row
    # locks (the file it records, its job's counters, the leases it renews) hold up every
    # writer of those rows, the sweeper included, until the link is back: PostgreSQL keeps a
    # silent client's session, locks and all, until TCP gives up on it. That stall is real
    # (docs/reliability.md), but not what this test checks.
    with frozen_holding_claim(cluster, "worker-1", job_id, outside_transaction=True) as claim:
        cluster.partition("worker-1")
    file_id, token = claim
    cut = time.monotonic()
    try:
        # Its lease runs out while it is cut off, and the sweeper hands its file on (within a
        # lease and a sweep, about 8 s; the bound leaves room for a busy machine, and the link
        # stays cut until then).
        wait_until(
            lambda: handed_over(cluster, offsets) > 0,
            "the sweeper re-sending the partitioned host's files",
            lambda: cluster.logs("worker-2", "beat"),
            timeout=60,
        )
        time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut)))
    finally:
        cluster.heal("worker-1")
    outcome = settle(cluster, job_id, markers)
    account(summary, outcome, cluster)
    # The file worker-1 held was claimed anew, so its late result was fenced off; it is in the
    # archive once (settle), converted under the new claim.
    status, final_token = cluster.claim_of(file_id)
    assert status == "COMPLETED" and final_token != token, (status, final_token, token)
    # The host came back and works on: it is alive in the registry again.
    cluster.wait_registered("worker-1")
    assert worker_1.processes[-1].poll() is None, cluster.logs("worker-1")


def test_worker_host_sigterm_is_a_graceful_scale_in(
    cluster: Cluster, summary: ClusterSummary
) -> None:
    job_id, markers, _ = start_mid_job(cluster, "scale-in", api=1)
    worker_1 = cluster.hosts["worker-1"]
    main = worker_1.processes[-1]  # ip netns exec and taskset exec: this is Celery's main
    # SIGTERM while worker-1 holds a claimed file: sent while its processes are frozen, the
    # signal waits until they continue, with that conversion under way.
    with frozen_holding_claim(cluster, "worker-1", job_id) as (file_id, token):
        signalled_at = worker_1.log_size()
        os.kill(main.pid, signal.SIGTERM)
    try:
        code = main.wait(timeout=120)
        assert code == 0, cluster.logs("worker-1")
        after = worker_1.log_since(signalled_at)
        assert "Warm shutdown" in after, cluster.logs("worker-1")
        # That conversion finished on worker-1 before it exited, recorded under worker-1's own
        # claim (nobody claimed the file since).
        recorded = {record.get("file_id") for record in events(after, "file.completed")}
        assert file_id in recorded, cluster.logs("worker-1")
        assert cluster.claim_of(file_id) == ("COMPLETED", token), cluster.claim_of(file_id)
        outcome = settle(cluster, job_id, markers)
        account(summary, outcome, cluster)
    finally:
        worker_1.kill_all()  # whatever a failed shutdown left
        restart_worker(cluster, "worker-1")


def test_two_worker_hosts_convert_more_than_one(cluster: Cluster, summary: ClusterSummary) -> None:
    # Each worker host on its own core, LibreOffice included.
    for name, cpu in WORKER_CPUS.items():
        assert cluster.affinities(name) == {frozenset({cpu})}, (name, cluster.affinities(name))
    batch, markers = bench_batch(SCALING_DOCUMENTS, "scaling")
    job_id, figure = measure_scaling(cluster, batch, SCALING_DOCUMENTS)
    account(summary, settle(cluster, job_id, markers), cluster)
    summary.scaling = figure
    # The switches took effect: a one-host phase saw at most the conversion worker-2 was
    # running when told to stop, and worker-2 took a real share of the two-host phases. The
    # ratio itself is printed, not asserted: the hosts share this machine's two cores with the
    # database, the broker, the store, the APIs and whatever else runs here, so a bound on it
    # would fail on a busy machine.
    one_host = [window for window in figure.windows if window.hosts == 1]
    two_hosts = [window for window in figure.windows if window.hosts == 2]
    assert all(window.stragglers <= 1 for window in one_host), one_host
    worker_2_share = sum(w.second_host_files for w in two_hosts) / sum(w.files for w in two_hosts)
    assert worker_2_share >= 0.25, two_hosts
