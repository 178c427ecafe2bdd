"""What tracing costs per file: the same job through the real service with tracing off and on.

    python -m tests.bench.tracing_cost --files 300 --rounds 3            # fake converter
    python -m tests.bench.tracing_cost --files 60 --rounds 2 --converter uno

Each run starts the embedded default (``infra/run_embedded.py``, as ``make run`` does) on a
fresh data directory, submits one zip of ``--files`` two-page bench documents
(tests/bench/documents.py) and waits for COMPLETED. With tracing on, QUIRE_OTEL_ENDPOINT points
at an OTLP/HTTP receiver in this process (tests/e2e/otlp.py), which decodes every span as a
collector would. Off and on take turns, the order swapped each round, so a drift of the machine
weighs on both. Two figures per run:

- CPU seconds per file of every process of the service (API, worker pool, beat, Redis), read
  from /proc after the job ended minus what they had used when the service became ready; the
  one that matters on a shared machine, since a wall clock also measures the neighbours;
- wall seconds per file from the POST to COMPLETED.

The fake converter (``--converter fake``) leaves only Quire's own work per file (database,
store, queue), so the tracing share shows at its largest; with LibreOffice it shrinks. Both
figures move with the machine's load, and with the run's length (idle processes poll), so the
service's difference between off and on is within its noise.

``--worker-path`` measures the tracing cost itself, as tests/bench/profile.py measures the worker
path: each round a fresh interpreter converts the same documents through the conversion task
(Celery's ``apply``, so the Celery instrumentation's hooks run), with a converter that writes a
canned PDF, against SQLite, the local store and a private Redis, and reports its own CPU time
(``time.process_time``: every thread, the span exporter's included, its final flush too) per
document, the converter's share taken out. The receiver runs in this process, apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench.documents import bench_zip
from tests.e2e.otlp import OtlpReceiver
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    tracing: bool
    files: int
    cpu_seconds: float
    wall_seconds: float
    spans: int

    @property
    def cpu_ms_per_file(self) -> float:
        return 1000 * self.cpu_seconds / self.files

    @property
    def wall_ms_per_file(self) -> float:
        return 1000 * self.wall_seconds / self.files


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) of ``pid`` and every live process under it, children reaped
    included."""
    total = 0
    for one in descendants(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def run_once(zip_bytes: bytes, files: int, tracing: bool, converter: str, workers: int) -> Run:
    collector = OtlpReceiver()
    collector.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="quire-tracing-cost-") as data:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("QUIRE_", "OTEL_"))},
            "PORT": str(port),
            "QUIRE_DATA_DIR": data,
            "QUIRE_SECRET_KEY": "bench-secret",
            "QUIRE_CONVERTER": converter,
            "QUIRE_WORKER_CONCURRENCY": str(workers),
            "QUIRE_LOG_LEVEL": "WARNING",
        }
        if tracing:
            env["QUIRE_OTEL_ENDPOINT"] = collector.endpoint
        with open(Path(data) / "service.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "infra/run_embedded.py"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(url, process)
            time.sleep(2)  # the pool processes' start-up (LibreOffice's too) is not the job's
            before = cpu_seconds(process.pid)
            started = time.monotonic()
            answer = httpx.post(
                f"{url}/api/v1/jobs",
                files={"file": ("bench.zip", zip_bytes, "application/zip")},
                timeout=300,
            )
            answer.raise_for_status()
            status_url = answer.json()["status_url"]
            while True:
                status = httpx.get(status_url, timeout=60).json()
                if status["status"] in ("COMPLETED", "FAILED"):
                    break
                time.sleep(0.5)
            wall = time.monotonic() - started
            used = cpu_seconds(process.pid) - before
            if status["status"] != "COMPLETED":
                raise SystemExit(f"the job ended {status['status']}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=600)
            collector.stop()
    return Run(tracing, files, used, wall, len(collector.snapshot()))


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the service died while starting")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the service did not become ready")


WORKER_PATH = """
import json, os, sys, tempfile, time
from pathlib import Path

from tests.bench.profile import CannedConverter, _environment, _new_job
from tests.services import redis_server

documents, endpoint = int(sys.argv[1]), sys.argv[2]
with tempfile.TemporaryDirectory(prefix="quire-tracing-cost-") as workdir:
    with redis_server(Path(workdir) / "redis") as redis:
        if endpoint:
            os.environ["QUIRE_OTEL_ENDPOINT"] = endpoint
        _environment(Path(workdir), redis.url)
        from app import queue, tracing
        from app.config import get_settings
        from app.storage import get_store
        from tests.bench.documents import bench_zip
        from workers import celery_app, tasks
        from workers.ingest import ingest_job

        sent = {"convert": [], "archive": []}
        queue.send_conversions = lambda ids: sent["convert"].extend(ids)
        queue.send_archive = sent["archive"].append
        celery_app._process_init()  # what worker_process_init runs: tracing on, or not
        settings, store = get_settings(), get_store()
        converter = CannedConverter(b"%PDF-1.7\\n" + os.urandom(40_000) + b"\\n%%EOF\\n")
        tasks.get_converter = lambda: converter
        job_id = _new_job(store, settings, bench_zip(documents, 2))
        ingest_job(job_id, store, settings)
        assert len(sent["convert"]) == documents
        started = time.process_time()
        for file_id in sent["convert"]:
            tasks.convert.apply(args=[file_id]).get()
        tracing.shutdown_tracing()  # the last export is part of the cost
        cpu = time.process_time() - started - converter.cpu
        assert len(sent["archive"]) == 1
print(json.dumps({"cpu_ms_per_document": 1000 * cpu / documents}))
"""


def worker_path(documents: int, rounds: int) -> None:
    collector = OtlpReceiver()
    collector.start()
    results: dict[bool, list[float]] = {False: [], True: []}
    try:
        for round_number in range(rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for tracing in order:
                env = {k: v for k, v in os.environ.items() if not k.startswith(("QUIRE_", "OTEL_"))}
                endpoint = collector.endpoint if tracing else ""
                output = subprocess.run(
                    [sys.executable, "-c", WORKER_PATH, str(documents), endpoint],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if output.returncode != 0:
                    raise SystemExit(output.stderr[-3000:])
                cpu = float(json.loads(output.stdout.splitlines()[-1])["cpu_ms_per_document"])
                results[tracing].append(cpu)
                print(
                    f"round {round_number + 1} tracing {'on ' if tracing else 'off'}: "
                    f"{cpu:.3f} ms CPU per document",
                    flush=True,
                )
    finally:
        collector.stop()
    off, on = statistics.median(results[False]), statistics.median(results[True])
    spans = len(collector.snapshot()) / (documents * rounds)
    print(
        f"\nworker path, {documents} documents x {rounds} rounds (medians): "
        f"off {off:.3f} ms, on {on:.3f} ms per document: "
        f"+{on - off:.3f} ms ({on / off:.3f}x); {spans:.2f} spans per document exported"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--converter", choices=["fake", "uno"], default="fake")
    parser.add_argument("--workers", type=int, default=3, help="QUIRE_WORKER_CONCURRENCY")
    parser.add_argument(
        "--worker-path", action="store_true", help="the tracing cost in-process, CPU only"
    )
    args = parser.parse_args()
    if args.worker_path:
        worker_path(args.files, args.rounds)
        return
    zip_bytes = bench_zip(args.files, 2)
    runs: list[Run] = []
    for round_number in range(args.rounds):
        order = (False, True) if round_number % 2 == 0 else (True, False)
        for tracing in order:
            run = run_once(zip_bytes, args.files, tracing, args.converter, args.workers)
            runs.append(run)
            print(
                f"round {round_number + 1} tracing {'on ' if tracing else 'off'}: "
                f"CPU {run.cpu_ms_per_file:.2f} ms/file, wall {run.wall_ms_per_file:.2f} ms/file, "
                f"{run.spans} spans received",
                flush=True,
            )
    off = [r for r in runs if not r.tracing]
    on = [r for r in runs if r.tracing]
    cpu_off = statistics.median(r.cpu_ms_per_file for r in off)
    cpu_on = statistics.median(r.cpu_ms_per_file for r in on)
    wall_off = statistics.median(r.wall_ms_per_file for r in off)
    wall_on = statistics.median(r.wall_ms_per_file for r in on)
    print(
        f"\n{args.files} files x {args.rounds} rounds, converter {args.converter}, "
        f"{args.workers} worker processes (medians)\n"
        f"CPU per file:  off {cpu_off:.2f} ms, on {cpu_on:.2f} ms, "
        f"+{cpu_on - cpu_off:.2f} ms ({cpu_on / cpu_off:.3f}x)\n"
        f"wall per file: off {wall_off:.2f} ms, on {wall_on:.2f} ms ({wall_on / wall_off:.3f}x)\n"
        f"spans per file with tracing on: {statistics.median(r.spans for r in on) / args.files:.2f}"
    )


if __name__ == "__main__":
    main()
