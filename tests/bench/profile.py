"""CPU profiles of Quire's own work, without LibreOffice and without wall-clock noise.

``python -m tests.bench.profile worker`` runs the per-document conversion path (claim, fetch,
validate, sanitise, record, store the PDF, count the file) for each bench document, with a
converter that writes a canned PDF instead of running LibreOffice, and reports the CPU time
(``time.process_time``: every thread of this process, nothing else on the machine) per
document, the converter's own share taken out.

``python -m tests.bench.profile post`` sends the bench's zip to the real API application
in-process (driven over ASGI in 64 KiB chunks, as uvicorn delivers them), with a private
Redis as the broker, and reports the CPU time of the whole request and of each step.

Both use the embedded default (SQLite and the local store) in a temporary directory, and take
``--profile FILE`` to write a cProfile dump of the measured runs. On a busy machine these
figures stay put where wall-clock ones do not.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHUNK = 65536  # what uvicorn hands the application per receive() for a large body
BOUNDARY = "quirebenchboundary"


def _environment(workdir: Path, broker_url: str = "redis://127.0.0.1:1/0") -> None:
    """Settings for a fresh embedded default in ``workdir``, before anything reads them."""
    os.environ.update(
        {
            "QUIRE_DATA_DIR": str(workdir / "data"),
            "QUIRE_SECRET_KEY": "bench",
            "QUIRE_BROKER_URL": broker_url,
            "QUIRE_LOG_LEVEL": "WARNING",
            "QUIRE_MIN_FREE_BYTES": "0",
        }
    )
    from app.migrate import upgrade

    upgrade()


def _new_job(store: Any, settings: Any, zip_bytes: bytes) -> str:
    """A job made from ``zip_bytes`` as the API makes one (stored, listed, rows written)."""
    from app import jobs
    from app.db import session_scope
    from app.storage import upload_key
    from app.zipinput import list_docx_entries

    job_id = jobs.new_job_id()
    store.put_bytes(upload_key(job_id), zip_bytes, "application/zip")
    with store.open_reader(upload_key(job_id)) as source:
        entries = list_docx_entries(source, settings.max_files_per_job)
    spec = getattr(jobs, "JobSpec", None)  # the job's options, since issue 5
    with session_scope() as session:
        if spec is None:
            jobs.create_job(session, job_id, entries, len(zip_bytes))  # type: ignore[arg-type]
        else:
            jobs.create_job(session, spec(job_id, len(zip_bytes)), entries)
    return job_id


def _summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name:34} mean {statistics.fmean(ms):7.3f} ms   median {statistics.median(ms):7.3f} ms"
        f"   min {min(ms):7.3f} ms   (n={len(ms)})"
    )


@contextmanager
def _profiled(path: Path | None) -> Iterator[None]:
    profiler = cProfile.Profile() if path else None
    if profiler:
        profiler.enable()
    try:
        yield
    finally:
        if profiler and path:
            profiler.disable()
            profiler.dump_stats(str(path))


# -- the worker's per-document path ----------------------------------------------------------


class CannedConverter:
    """Writes a PDF of a realistic size; its CPU time is measured so it can be taken out."""

    def __init__(self, pdf: bytes) -> None:
        self.pdf = pdf
        self.cpu = 0.0

    def convert(self, source: Path, target: Path, timeout: float, *options: Any) -> None:
        started = time.process_time()
        target.write_bytes(self.pdf)
        self.cpu += time.process_time() - started

    def close(self) -> None:
        pass


def profile_worker(documents: int, pages: int, rounds: int, profile: Path | None) -> None:
    from tests.services import redis_server

    workdir = Path(tempfile.mkdtemp(prefix="quire-profile-"))
    # A real Redis, as workers have: whatever they record there per file is counted too.
    try:
        with redis_server(workdir / "redis") as redis:
            _environment(workdir, redis.url)
            _measure_worker(documents, pages, rounds, profile)
        _parts(documents, pages, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure_worker(documents: int, pages: int, rounds: int, profile: Path | None) -> None:
    from app import queue
    from app.config import get_settings
    from app.storage import get_store
    from tests.bench.documents import bench_zip
    from workers.file_conversion import convert_file
    from workers.ingest import ingest_job

    sent: dict[str, list[str]] = defaultdict(list)
    queue.send_conversions = lambda ids: sent["convert"].extend(ids)  # type: ignore[assignment]
    queue.send_archive = sent["archive"].append  # type: ignore[assignment]
    settings, store = get_settings(), get_store()
    zip_bytes = bench_zip(documents, pages)
    # A bench document's PDF is 35-45 KB; the bytes only matter for the CRC and the store.
    converter = CannedConverter(b"%PDF-1.7\n" + os.urandom(40_000) + b"\n%%EOF\n")

    per_document: list[float] = []
    with _profiled(profile):
        for _ in range(rounds):
            job_id = _new_job(store, settings, zip_bytes)
            ingest_job(job_id, store, settings)
            while sent["convert"]:
                file_id = sent["convert"].pop(0)
                converter.cpu = 0.0
                started = time.process_time()
                convert_file(file_id, store, converter, settings)
                per_document.append(time.process_time() - started - converter.cpu)
            assert len(sent["archive"]) == 1, "the job's last file claims its archive"
            sent["archive"].clear()
    print(f"worker path, {documents} documents x {rounds} rounds, {pages} pages each")
    print(_summary("CPU per document", per_document))


def _parts(documents: int, pages: int, workdir: Path) -> None:
    """The package checks alone, on the same documents: validation and sanitising."""
    from tests.bench.documents import bench_docx
    from workers import sanitize, validation

    paths = []
    (workdir / "parts").mkdir()
    for index in range(min(documents, 200)):
        path = workdir / "parts" / f"{index}.docx"
        path.write_bytes(bench_docx(index, pages))
        paths.append(path)
    checks: list[tuple[str, Callable[[Path], object]]] = [
        (name, getattr(module, name))
        for module, name in (
            (validation, "validate_docx"),
            (sanitize, "strip_local_links"),
            (sanitize, "prepare_docx"),
        )
        if hasattr(module, name)
    ]
    for name, check in checks:
        times = []
        for path in paths:
            started = time.process_time()
            check(path)
            times.append(time.process_time() - started)
        print(_summary(name, times))


# -- the real worker processes, Celery included ----------------------------------------------


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of these processes so far (clock ticks in /proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def profile_celery(documents: int, pages: int, rounds: int, concurrency: int) -> None:
    """Jobs through a real Celery worker (prefork, its parent and pool processes) with the fake
    converter: what a conversion task costs besides LibreOffice, Celery's own share included."""
    import subprocess

    from tests.services import descendants, redis_server

    workdir = Path(tempfile.mkdtemp(prefix="quire-profile-"))
    with redis_server(workdir / "redis") as redis:
        _environment(workdir, redis.url)
        os.environ["QUIRE_CONVERTER"] = "fake"
        os.environ["QUIRE_WORKER_CONCURRENCY"] = str(concurrency)
        from app import queue
        from app.config import get_settings
        from app.db import session_scope
        from app.models import Job, JobStatus
        from app.storage import get_store
        from tests.bench.documents import bench_zip

        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app:celery",
                "worker",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            settings, store = get_settings(), get_store()
            zip_bytes = bench_zip(documents, pages)

            def run_job() -> None:
                job_id = _new_job(store, settings, zip_bytes)
                queue.send_ingest(job_id)
                while True:
                    time.sleep(0.2)
                    with session_scope() as session:
                        job = session.get(Job, job_id)
                        assert job is not None
                        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
                            assert job.status == JobStatus.COMPLETED, job.error_message
                            return

            run_job()  # warm-up: pool processes import, connect and open their databases
            pids = [worker.pid, *descendants(worker.pid)]
            main_before, all_before = _cpu_seconds([worker.pid]), _cpu_seconds(pids)
            wall = time.perf_counter()
            for _ in range(rounds):
                run_job()
            wall = time.perf_counter() - wall
            main_cpu = _cpu_seconds([worker.pid]) - main_before
            all_cpu = _cpu_seconds(pids) - all_before
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    shutil.rmtree(workdir, ignore_errors=True)
    count = documents * rounds
    print(f"Celery worker (K={concurrency}, fake converter), {documents} documents x {rounds}")
    parent, pool = main_cpu / count * 1000, (all_cpu - main_cpu) / count * 1000
    print(
        f"  worker CPU per document: {parent + pool:.2f} ms (parent {parent:.2f} ms, "
        f"pool {pool:.2f} ms); wall {wall:.1f} s"
    )


# -- POST /api/v1/jobs -----------------------------------------------------------------------


def _multipart(data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def _post(app: Any, body: bytes) -> int:
    """One POST through the ASGI interface, the body in uvicorn-sized chunks."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/jobs",
        "raw_path": b"/api/v1/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    chunks = [body[at : at + CHUNK] for at in range(0, len(body), CHUNK)]
    position = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal position
        if position < len(chunks):
            position += 1
            return {
                "type": "http.request",
                "body": chunks[position - 1],
                "more_body": position < len(chunks),
            }
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class StepTimer:
    """CPU and wall time spent inside the wrapped functions, per request."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.wall: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        if asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                cpu, wall = time.process_time(), time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.cpu[label].append(time.process_time() - cpu)
                    self.wall[label].append(time.perf_counter() - wall)

            setattr(owner, name, timed_async)
        else:

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                cpu, wall = time.process_time(), time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.cpu[label].append(time.process_time() - cpu)
                    self.wall[label].append(time.perf_counter() - wall)

            setattr(owner, name, timed)


def profile_post(documents: int, pages: int, rounds: int, profile: Path | None) -> None:
    from tests.services import redis_server

    workdir = Path(tempfile.mkdtemp(prefix="quire-profile-"))
    try:
        with redis_server(workdir / "redis") as redis:
            _environment(workdir, redis.url)
            _measure_post(workdir, documents, pages, rounds, profile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure_post(
    workdir: Path, documents: int, pages: int, rounds: int, profile: Path | None
) -> None:
    from app import queue
    from app.api import jobs as api_jobs
    from app.main import create_app
    from app.services import submission
    from app.storage import LocalStore
    from tests.bench.documents import bench_zip

    body = _multipart(bench_zip(documents, pages))
    steps = StepTimer()
    receive = "receive_upload" if hasattr(api_jobs, "receive_upload") else "receive_zip"
    steps.wrap(api_jobs, receive, "receive (parse + store)")
    steps.wrap(submission, "_list_entries", "zip listing")
    steps.wrap(submission, "create_job", "job rows (create_job)")
    steps.wrap(queue, "send_ingest", "enqueue (send_ingest)")
    app = create_app()

    async def run_all() -> tuple[list[float], list[float], list[float]]:
        totals, walls, sinks = [], [], []
        sink_store = LocalStore(workdir / "sink", secret="x")
        async with app.router.lifespan_context(app):
            for round_ in range(rounds + 2):  # two warm-up requests: imports, pools
                cpu, wall = time.process_time(), time.perf_counter()
                status = await _post(app, body)
                assert status == 202, status
                if round_ >= 2:
                    totals.append(time.process_time() - cpu)
                    walls.append(time.perf_counter() - wall)
                # The sink's work: the same chunks written to a store, nothing else.
                cpu = time.process_time()
                writer = sink_store.open_writer(f"uploads/{round_}/source.zip", "application/zip")
                for at in range(0, len(body), CHUNK):
                    writer.write(body[at : at + CHUNK])
                writer.commit()
                if round_ >= 2:
                    sinks.append(time.process_time() - cpu)
        return totals, walls, sinks

    for label in list(steps.cpu):
        steps.cpu[label].clear()
    with _profiled(profile):
        totals, walls, sinks = asyncio.run(run_all())
    print(f"POST /api/v1/jobs, {documents} documents ({len(body) / 1e6:.1f} MB) x {rounds}")
    print(_summary("whole request, CPU", totals))
    print(_summary("whole request, wall", walls))
    print(_summary("store-only writes, CPU", sinks))
    for label, values in steps.cpu.items():
        print(_summary(f"  {label}, CPU", values[2:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["worker", "celery", "post"])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="jobs (worker) or POSTs (post)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes (celery)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile dump here")
    args = parser.parse_args(argv)
    if args.what == "worker":
        profile_worker(args.documents, args.pages, args.rounds or 1, args.profile)
    elif args.what == "celery":
        profile_celery(args.documents, args.pages, args.rounds or 1, args.concurrency)
    else:
        profile_post(args.documents, args.pages, args.rounds or 20, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
