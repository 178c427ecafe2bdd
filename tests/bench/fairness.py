"""The fairness scenario of ``make bench`` (issue #16): does a small job wait for a big batch,
and do two clients share the workers?

Measured on one service per backend (the embedded default, and PostgreSQL + S3), in one run:

1. small-job latency, from the start of the POST to the job's ``completed_at``: jobs of a few
   files sent one at a time to the idle service, then the same sent at intervals while a big
   batch converts; beside it the issue's deadline, max(3 s, 3 x the idle median);
2. the big batch's rate alone, and with those small jobs sent beside it;
3. per-key shares: two API keys each send a batch of the same size at the same moment; of the
   conversions that finished while both jobs were running, the share of each key. Then again
   with key b sending a few seconds after key a (``--fairness-stagger``).

The status document has no per-file finish time, so the shares are counted from each file's
``finished_at`` in the service's database, read after the run by this module run as a script
with the service's settings (as ``archive_probe`` reads the archive); and, as a check from
outside, from both jobs' progress polled through the API at a fixed interval.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.bench.documents import bench_zip
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("embedded", "postgres-s3")

# Issue #16, item 1: a job of 10 files or fewer finishes within 3 s or 3x its idle time,
# whichever is larger, whatever else is running.
DEADLINE_FLOOR_SECONDS = 3.0
DEADLINE_IDLE_FACTOR = 3.0
# Item 2: while two keys' batches run, each gets half of the conversions, within 10% (of that
# half: 45-55%).
SHARE_TOLERANCE = 0.10


# -- the figures: pure, tested in tests/infra/test_bench_fairness.py -----------------------------


def small_job_deadline(idle_seconds: float) -> float:
    """How long a small job may take beside big batches, given its time on an idle service."""
    return max(DEADLINE_FLOOR_SECONDS, DEADLINE_IDLE_FACTOR * idle_seconds)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "jobs": len(seconds),
        "median_seconds": statistics.median(seconds),
        "worst_seconds": max(seconds),
    }


@dataclass(frozen=True)
class Shares:
    """Each key's share of the conversions that finished inside the window."""

    window_start: float
    window_end: float
    conversions: dict[str, int]
    shares: dict[str, float]
    # The largest distance of a share from an equal one, as a fraction of the equal share:
    # 0.10 is 45% or 55% of two keys' conversions.
    deviation: float

    def holds(self) -> bool:
        return self.deviation <= SHARE_TOLERANCE


def _shares(counts: dict[str, int], start: float, end: float) -> Shares:
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no conversion finished while every job was running")
    shares = {key: count / total for key, count in counts.items()}
    fair = 1 / len(counts)
    deviation = max(abs(share - fair) / fair for share in shares.values())
    return Shares(start, end, counts, shares, deviation)


def shares_while_all_run(
    finish_times: Mapping[str, Sequence[float]], created: Mapping[str, float]
) -> Shares:
    """Shares of the conversions that finished while every key's job was running: from the
    creation of the last job to the last conversion of the job that ended first."""
    start = max(created.values())
    end = min(max(times) for times in finish_times.values())
    counts = {
        key: sum(1 for at in times if start <= at <= end) for key, times in finish_times.items()
    }
    return _shares(counts, start, end)


@dataclass(frozen=True)
class ProgressSample:
    """Finished and total files of each key's job, polled at ``at``."""

    at: float
    finished: dict[str, int]
    total: dict[str, int]

    def all_running(self) -> bool:
        return all(self.finished[key] < self.total[key] for key in self.total)


def polled_shares(samples: Sequence[ProgressSample]) -> Shares | None:
    """Shares of the files that finished between the first and the last poll that saw every
    job unfinished; None with fewer than two such polls."""
    inside = [sample for sample in samples if sample.all_running()]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    counts = {key: last.finished[key] - first.finished[key] for key in first.finished}
    return _shares(counts, first.at, last.at)


# -- the service, its clients and backends ------------------------------------------------------


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KeyClient:
    """One API key's view of the service. One per thread: each holds its own connections."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=3600
        )

    def submit(self, zip_bytes: bytes) -> tuple[str, float]:
        """The new job's id and the wall-clock time the POST started."""
        started = time.time()
        files = {"file": ("bench.zip", zip_bytes, "application/zip")}
        response = self.http.post("/api/v1/jobs", files=files)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"]), started

    def summary(self, job_id: str) -> dict[str, Any]:
        """The job's entry in this key's jobs list: its counts without its files (a status
        document of thousands of files, polled every second, would cost the API CPU the
        workers need)."""
        response = self.http.get("/api/v1/jobs", params={"limit": 200})
        response.raise_for_status()
        for job in response.json()["jobs"]:
            if job["job_id"] == job_id:
                return dict(job)
        raise LookupError(f"job {job_id} is not among this key's newest 200")

    def wait(self, job_id: str, interval: float) -> dict[str, Any]:
        while True:
            job = self.summary(job_id)
            if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                assert job["status"] == "COMPLETED", job
                return job
            time.sleep(interval)

    def run(self, zip_bytes: bytes, interval: float) -> tuple[float, dict[str, Any]]:
        """Submit and wait: seconds from the POST's start to the job's ``completed_at``."""
        job_id, started = self.submit(zip_bytes)
        job = self.wait(job_id, interval)
        return _timestamp(job["completed_at"]) - started, job

    def close(self) -> None:
        self.http.close()


@contextmanager
def _moto_server() -> Iterator[str]:
    """moto's S3 server in a process of its own, so that serving the workers' objects takes
    no time from this process's clocks and threads."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def backend_settings(backend: str) -> Iterator[dict[str, str]]:
    """The settings that point the service at ``backend``; its servers live as long as this."""
    if backend == "embedded":
        yield {}
        return
    from tests.services import postgres_server

    with postgres_server() as postgres, _moto_server() as endpoint:
        yield {
            "QUIRE_DATABASE_URL": postgres.url,
            # A database server: the service refuses to start without a key shared by its hosts.
            "QUIRE_SECRET_KEY": secrets.token_hex(32),
            "QUIRE_STORAGE_BACKEND": "s3",
            "QUIRE_S3_ENDPOINT_URL": endpoint,
            "QUIRE_S3_BUCKET": "quire-bench",
            "QUIRE_S3_ACCESS_KEY": "bench",
            "QUIRE_S3_SECRET_KEY": secrets.token_hex(16),
        }


def read_finish_times(env: Mapping[str, str], job_ids: Sequence[str]) -> dict[str, list[float]]:
    """Each job's files' ``finished_at``, from the service's own database."""
    probe = subprocess.run(
        [sys.executable, "-m", "tests.bench.fairness", *job_ids],
        cwd=REPO,
        env=dict(env),
        check=True,
        capture_output=True,
        text=True,
    )
    times: dict[str, list[float]] = json.loads(probe.stdout.strip().splitlines()[-1])
    return times


# -- the scenario -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairnessOptions:
    batch: int = 600
    key_batch: int = 2000
    small_jobs: int = 6
    small_sizes: tuple[int, ...] = (1, 5)
    pages: int = 2
    backends: tuple[str, ...] = BACKENDS
    # Share of the batch's time alone over which the small jobs are sent beside it: they all
    # go out while it still has work left, as a person's would.
    spread: float = 0.6
    # Seconds key b sends after key a in the second two-key run (0: no second run). At the
    # same moment, both jobs' ingests queue their conversions in turns, 50 at a time, so first
    # in, first out shares them; a batch that arrives once another is queued waits for it.
    stagger: float = 5.0


def _idle_latencies(
    client: KeyClient, small_zips: dict[int, bytes], jobs: int
) -> dict[int, list[float]]:
    return {
        size: [client.run(data, interval=0.05)[0] for _ in range(jobs)]
        for size, data in small_zips.items()
    }


def _beside_batch(
    url: str,
    batch_key: str,
    small_key: str,
    batch_zip: bytes,
    small_zips: dict[int, bytes],
    jobs: int,
    spread_seconds: float,
) -> tuple[float, dict[int, list[float]]]:
    """The batch's seconds (POST to completed_at) and the small jobs' latencies beside it."""
    schedule = [size for _ in range(jobs) for size in small_zips]  # sizes in turn: 1, 5, 1, ...
    interval = spread_seconds / len(schedule)
    latencies: dict[int, list[float]] = {size: [] for size in small_zips}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def small_job(size: int, offset: float) -> None:
        time.sleep(offset)
        client = KeyClient(url, small_key)
        try:
            # The latency is the server's completed_at, so polling slowly loses nothing, and
            # a dozen clients polling fast would take API CPU from the batch being measured.
            seconds, _ = client.run(small_zips[size], interval=0.5)
            with lock:
                latencies[size].append(seconds)
        except BaseException as error:  # noqa: BLE001 - reported after the join
            failures.append(error)
        finally:
            client.close()

    batch = KeyClient(url, batch_key)
    try:
        job_id, started = batch.submit(batch_zip)
        threads = [
            threading.Thread(target=small_job, args=(size, (index + 1) * interval))
            for index, size in enumerate(schedule)
        ]
        for thread in threads:
            thread.start()
        job = batch.wait(job_id, interval=1.0)
        for thread in threads:
            thread.join()
    finally:
        batch.close()
    if failures:
        raise failures[0]
    return _timestamp(job["completed_at"]) - started, latencies


POLL_INTERVAL = 1.0  # seconds between two polls of both keys' progress


def _two_keys(
    url: str, keys: Mapping[str, str], zip_bytes: bytes, stagger: float, env: Mapping[str, str]
) -> dict[str, Any]:
    """Key a sends its batch and key b the same ``stagger`` seconds later (0: at the same
    moment); each key's share of the conversions that finished while both jobs ran."""
    clients = {name: KeyClient(url, key) for name, key in keys.items()}
    delays = {name: stagger if index else 0.0 for index, name in enumerate(keys)}
    job_ids: dict[str, str] = {}
    barrier = threading.Barrier(len(keys))

    def send(name: str) -> None:
        barrier.wait()
        time.sleep(delays[name])
        job_ids[name] = clients[name].submit(zip_bytes)[0]

    samples: list[ProgressSample] = []
    created: dict[str, float] = {}
    try:
        threads = [threading.Thread(target=send, args=(name,)) for name in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while True:
            at = time.time()
            jobs = {name: clients[name].summary(job_ids[name]) for name in keys}
            created = {name: _timestamp(job["created_at"]) for name, job in jobs.items()}
            samples.append(
                ProgressSample(
                    at,
                    {name: int(job["finished_files"]) for name, job in jobs.items()},
                    {name: int(job["file_count"]) for name, job in jobs.items()},
                )
            )
            if all(job["status"] in ("COMPLETED", "FAILED") for job in jobs.values()):
                break
            time.sleep(POLL_INTERVAL)
    finally:
        for client in clients.values():
            client.close()
    times = read_finish_times(env, list(job_ids.values()))
    by_database = shares_while_all_run(
        {name: times[job_id] for name, job_id in job_ids.items()}, created
    )
    by_polling = polled_shares(samples)
    return {
        "stagger_seconds": stagger,
        "from_finished_at": {**asdict(by_database), "holds": by_database.holds()},
        "from_polled_progress": (
            {**asdict(by_polling), "interval_seconds": POLL_INTERVAL, "polls": len(samples)}
            if by_polling is not None
            else None
        ),
    }


def measure_backend(
    backend: str,
    options: FairnessOptions,
    k: int,
    workdir: Path,
    start_service: Callable[[Path, int, dict[str, str]], Any],
) -> dict[str, Any]:
    """Every figure of the scenario on one backend, on one service."""
    keys = {name: secrets.token_hex(16) for name in ("a", "b", "small")}
    small_zips = {
        size: bench_zip(size, options.pages, folder=f"small-{size}") for size in options.small_sizes
    }
    batch_zip = bench_zip(options.batch, options.pages, folder="batch")
    key_zip = bench_zip(options.key_batch, options.pages, folder="key-batch")
    two_keys = {"a": keys["a"], "b": keys["b"]}
    with backend_settings(backend) as settings:
        service = start_service(workdir, k, {**settings, "QUIRE_API_KEYS": ",".join(keys.values())})
        try:
            batch = KeyClient(service.url, keys["a"])
            small = KeyClient(service.url, keys["small"])
            try:
                # Every worker's LibreOffice starts here, not in the first timed job.
                batch.run(bench_zip(2 * k, options.pages, folder="warmup"), interval=0.25)
                idle = _idle_latencies(small, small_zips, options.small_jobs)
                # The batch alone runs before and after the one with small jobs beside it, and
                # the two are averaged: this machine's speed drifts over minutes.
                alone_runs = [batch.run(batch_zip, interval=1.0)[0]]
                beside_seconds, beside = _beside_batch(
                    service.url,
                    keys["a"],
                    keys["small"],
                    batch_zip,
                    small_zips,
                    options.small_jobs,
                    options.spread * alone_runs[0],
                )
                alone_runs.append(batch.run(batch_zip, interval=1.0)[0])
            finally:
                batch.close()
                small.close()
            same_moment = _two_keys(service.url, two_keys, key_zip, 0.0, service.env)
            staggered = (
                _two_keys(service.url, two_keys, key_zip, options.stagger, service.env)
                if options.stagger > 0
                else None
            )
        finally:
            service.stop()

    alone_seconds = statistics.mean(alone_runs)
    small_figures = []
    for size in options.small_sizes:
        idle_summary = latency_summary(idle[size])
        beside_summary = latency_summary(beside[size])
        deadline = small_job_deadline(idle_summary["median_seconds"])
        small_figures.append(
            {
                "files": size,
                "idle": idle_summary,
                "beside_batch": beside_summary,
                "deadline_seconds": deadline,
                "holds": beside_summary["worst_seconds"] <= deadline,
            }
        )
    return {
        "backend": backend,
        "small_jobs": small_figures,
        "batch": {
            "documents": options.batch,
            "alone_docs_per_second": options.batch / alone_seconds,
            "alone_runs_docs_per_second": [options.batch / seconds for seconds in alone_runs],
            "beside_small_jobs_docs_per_second": options.batch / beside_seconds,
            "beside_over_alone": alone_seconds / beside_seconds,
        },
        "two_keys": {
            "documents_each": options.key_batch,
            "same_moment": same_moment,
            "staggered": staggered,
        },
    }


def measure_fairness(
    options: FairnessOptions,
    k: int,
    workdir: Path,
    start_service: Callable[[Path, int, dict[str, str]], Any],
) -> dict[str, Any]:
    """``start_service(workdir, k, env)``: run.py's Service, passed in (run.py imports this
    module, not the other way round)."""
    return {
        "options": {**asdict(options)},
        "backends": [
            measure_backend(backend, options, k, workdir / backend, start_service)
            for backend in options.backends
        ],
    }


# -- options and the report ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fairness scenario (issue #16)")
    group.add_argument(
        "--fairness",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the fairness scenario after the rest (default: on)",
    )
    group.add_argument(
        "--fairness-only", action="store_true", help="run the fairness scenario alone"
    )
    group.add_argument(
        "--fairness-batch", type=int, default=600, help="files of the big batch the small jobs meet"
    )
    group.add_argument(
        "--fairness-key-batch",
        type=int,
        default=2000,
        help="files of each of the two keys' batches sent at the same moment",
    )
    group.add_argument(
        "--fairness-small", type=int, default=6, help="small jobs of each size, idle and beside"
    )
    group.add_argument(
        "--fairness-small-sizes",
        default="1,5",
        help="files per small job, comma-separated (the issue's small job: 10 files or fewer)",
    )
    group.add_argument(
        "--fairness-stagger",
        type=float,
        default=5.0,
        help="seconds key b sends after key a in a second two-key run (0: skip that run)",
    )
    group.add_argument(
        "--fairness-backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, of: {', '.join(BACKENDS)}",
    )


def options_from(args: argparse.Namespace) -> FairnessOptions:
    backends = tuple(name.strip() for name in args.fairness_backends.split(",") if name.strip())
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"unknown fairness backend(s): {', '.join(sorted(unknown))}")
    return FairnessOptions(
        batch=args.fairness_batch,
        key_batch=args.fairness_key_batch,
        small_jobs=args.fairness_small,
        small_sizes=tuple(int(size) for size in args.fairness_small_sizes.split(",")),
        pages=args.pages,
        backends=backends,
        stagger=args.fairness_stagger,
    )


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _shares_line(shares: Mapping[str, Any]) -> str:
    return (
        f"key a {_percent(shares['shares']['a'])}, key b {_percent(shares['shares']['b'])} "
        f"of {sum(shares['conversions'].values())} conversions in "
        f"{shares['window_end'] - shares['window_start']:.1f} s; "
        f"{100 * abs(shares['shares']['a'] - 0.5):.1f} points from 50% "
        f"({100 * shares['deviation']:.0f}% of a half)"
    )


def _two_keys_lines(two: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    if run is None:
        return []
    when = f"b {run['stagger_seconds']:.0f} s after a" if run["stagger_seconds"] else "same moment"
    database = run["from_finished_at"]
    lines = [
        f"  two keys, {two['documents_each']} files each, {when}; while both ran (target: "
        f"each 50% within 10% of it: {'holds' if database['holds'] else 'no'}):",
        f"    from the files' finished_at: {_shares_line(database)}",
    ]
    polled = run["from_polled_progress"]
    if polled is not None:
        lines.append(
            f"    from progress polled every {polled['interval_seconds']:.0f} s: "
            + _shares_line(polled)
        )
    return lines


def render_fairness(fairness: Mapping[str, Any]) -> list[str]:
    lines = ["fairness (issue #16): small jobs beside a batch, two keys side by side"]
    for result in fairness["backends"]:
        batch, two = result["batch"], result["two_keys"]
        lines += [
            "",
            f"{result['backend']}: small-job latency, POST to COMPLETED",
            f"  {'':40} {'median':>8} {'worst':>8} {'deadline':>9}  holds",
        ]
        for small in result["small_jobs"]:
            idle, beside = small["idle"], small["beside_batch"]
            what = f"{small['files']} file{'s' if small['files'] > 1 else ''}"
            lines += [
                f"  {what + ', idle':40} {idle['median_seconds']:>7.2f}s"
                f" {idle['worst_seconds']:>7.2f}s",
                f"  {what + ', beside a ' + str(batch['documents']) + '-file batch':40}"
                f" {beside['median_seconds']:>7.2f}s {beside['worst_seconds']:>7.2f}s"
                f" {small['deadline_seconds']:>8.2f}s  {'yes' if small['holds'] else 'no'}",
            ]
        runs = " and ".join(f"{rate:.2f}" for rate in batch["alone_runs_docs_per_second"])
        lines.append(
            f"  the {batch['documents']}-file batch: {batch['alone_docs_per_second']:.2f} docs/s "
            f"alone ({runs}), {batch['beside_small_jobs_docs_per_second']:.2f} with the small "
            f"jobs beside it (ratio {batch['beside_over_alone']:.2f})"
        )
        lines += _two_keys_lines(two, two["same_moment"])
        lines += _two_keys_lines(two, two["staggered"])
    return lines


# -- run as a script: the finish-time probe -----------------------------------------------------


def _finish_times(job_ids: Sequence[str]) -> dict[str, list[float]]:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import File

    times: dict[str, list[float]] = {job_id: [] for job_id in job_ids}
    with session_scope() as session:
        rows = session.execute(
            select(File.job_id, File.finished_at).where(
                File.job_id.in_(job_ids), File.finished_at.is_not(None)
            )
        )
        for job_id, finished_at in rows:
            if finished_at is None:  # excluded by the query; mypy cannot know
                continue
            # SQLite hands back naive values; they are UTC (app/models.py).
            aware = finished_at if finished_at.tzinfo else finished_at.replace(tzinfo=UTC)
            times[job_id].append(aware.timestamp())
    return {job_id: sorted(values) for job_id, values in times.items()}


if __name__ == "__main__":
    print(json.dumps(_finish_times(sys.argv[1:])))
