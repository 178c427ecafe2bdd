"""``make bench``: Quire end to end against LibreOffice's own limit and a naive baseline.

Measured in one run, on the same generated documents (tests/bench/documents.py):

1. the limit: K warm LibreOffice instances driven directly through UNO, K = worker concurrency;
2. the naive baseline: a cold ``soffice --convert-to pdf`` per file, K at a time, on a sample;
3. Quire end to end on the embedded default (``infra/run_embedded.py``): from the start of the
   POST to the job being COMPLETED with its archive written;
4. the fairness scenario (issue #16, ``tests/bench/fairness.py``): small jobs beside a big
   batch, two API keys side by side, on the embedded default and on PostgreSQL + S3
   (``--no-fairness`` skips it, ``--fairness-only`` runs it alone);
5. the scaling across hosts (issue #17, ``tests/bench/cluster.py``): one worker host against
   two on the multi-host cluster of the tests, with 1,000 documents (``--no-cluster`` skips it,
   ``--cluster-only`` runs it alone).

Also: the POST's time against an HTTP endpoint that only writes the same bytes to the store
(both the best of ``--post-runs``, taken in turns against an API with no worker beside it; the
direct-upload flow too when the API offers it), the peak memory of the API (also while
receiving a large upload), of the worker processes and of the archive build. CPU profiles of
the per-document worker path and of the POST: ``python -m tests.bench.profile --help``. The
merged PDF's build is measured on the same job (``tests/bench/merge_probe.py``).
Prints a table and writes the same as JSON. Timings on shared machines are noisy, so the
figures that matter are the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from tests.bench import cluster as cluster_scaling
from tests.bench import fairness
from tests.bench.documents import bench_docx, bench_zip
from tests.services import cmdline, descendants, free_port

REPO = Path(__file__).resolve().parents[2]


# -- 1. the limit: warm LibreOffice instances, nothing else ----------------------------------


def _limit_worker(slot: int, sources: list[str], outdir: str, barrier: Any, ends: Any) -> None:
    from workers.libreoffice.uno import UnoConverter

    converter = UnoConverter(
        soffice="soffice",
        profile_root=Path(outdir) / f"profile-{slot}",
        start_timeout=120,
        restart_after=100_000,
    )
    try:
        converter.convert(Path(sources[0]), Path(outdir) / f"warm-{slot}.pdf", timeout=120)
        barrier.wait()
        for index, source in enumerate(sources):
            converter.convert(Path(source), Path(outdir) / f"{slot}-{index}.pdf", timeout=120)
        ends.put(time.monotonic())
    finally:
        converter.close()


def measure_limit(sources: list[Path], k: int, workdir: Path) -> float:
    """Seconds for K warm instances to convert ``sources`` (split evenly), after warm-up."""
    context = mp.get_context("spawn")
    barrier, ends = context.Barrier(k + 1), context.Queue()
    processes = [
        context.Process(
            target=_limit_worker,
            args=(slot, [str(p) for p in sources[slot::k]], str(workdir), barrier, ends),
        )
        for slot in range(k)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.monotonic()
    finished = [ends.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    return max(finished) - started


# -- 2. the naive baseline: one cold soffice per document ------------------------------------


def measure_naive(sources: list[Path], k: int, workdir: Path) -> float:
    """Seconds for ``soffice --convert-to pdf`` per file, K processes at a time. Each slot has
    a profile made beforehand, so only the per-document start-up is counted, not first use."""

    def convert(slot: int, source: Path) -> None:
        profile = (workdir / f"naive-profile-{slot}").as_uri()
        subprocess.run(
            [
                "soffice",
                f"-env:UserInstallation={profile}",
                "--headless",
                "--norestore",
                "--convert-to",
                "pdf",
                "--outdir",
                str(workdir / f"naive-out-{slot}"),
                str(source),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )

    warm = [threading.Thread(target=convert, args=(slot, sources[0])) for slot in range(k)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()

    def run(slot: int) -> None:
        for source in sources[slot::k]:
            convert(slot, source)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(k)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


# -- 3. Quire end to end ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU_GROUPS = {  # cmdline marker -> the name in the report; the first that matches wins
    "soffice.bin": "libreoffice",
    "uvicorn": "api",
    "redis-server": "redis",
    "beat": "beat",
    "celery": "workers",
}


def _cpu_by_group(pids: list[int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid in pids:
        line = cmdline(pid)
        group = next((name for marker, name in CPU_GROUPS.items() if marker in line), "other")
        totals[group] = totals.get(group, 0.0) + _cpu_seconds(pid)
    return totals


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Service:
    def __init__(self, workdir: Path, k: int, env: dict[str, str] | None = None) -> None:
        """``env``: settings beside the embedded default's (API keys, another database or
        store), as the fairness scenario passes them."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "QUIRE_DATA_DIR": str(workdir / "data"),
            "QUIRE_WORKER_CONCURRENCY": str(k),
            "QUIRE_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(workdir / "service.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "infra/run_embedded.py"],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the service did not start; see service.log")

    def pids(self, marker: str) -> list[int]:
        return [pid for pid in descendants(self.process.pid) if marker in cmdline(pid)]

    def submit(self, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None) -> str:
        response = httpx.post(
            f"{self.url}/api/v1/jobs", content=body, headers=headers, timeout=3600
        )
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def submit_zip(self, data: bytes) -> str:
        files = {"file": ("bench.zip", data, "application/zip")}
        response = httpx.post(f"{self.url}/api/v1/jobs", files=files, timeout=3600)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def wait(self, job_id: str, interval: float = 0.25) -> dict[str, Any]:
        while True:
            status: dict[str, Any] = httpx.get(
                f"{self.url}/api/v1/jobs/{job_id}", timeout=60
            ).json()
            if status["status"] in ("COMPLETED", "FAILED"):
                return status
            time.sleep(interval)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=300)
        self.log.close()


def store_write_seconds(data: bytes, workdir: Path) -> float:
    """Writing the same bytes to the same kind of store, in the same chunks, without HTTP."""
    from app.storage import LocalStore

    store = LocalStore(workdir / "baseline-store", secret="x")
    started = time.perf_counter()
    writer = store.open_writer("uploads/baseline/source.zip", "application/zip")
    for offset in range(0, len(data), 65536):
        writer.write(data[offset : offset + 65536])
    writer.commit()
    return time.perf_counter() - started


BOUNDARY = "quirebenchboundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_body(data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@contextmanager
def _sink_server(workdir: Path) -> Iterator[str]:
    """tests/bench/sink.py in its own process: the URL it stores request bodies at."""
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.sink", str(port), str(workdir / "sink-store")],
        cwd=REPO,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(url, content=b"warm-up", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def http_sink_seconds(
    make_body: Callable[[], bytes | Iterator[bytes]], workdir: Path, runs: int = 3
) -> float:
    """The same body POSTed to an endpoint that only writes it to the store (tests/bench/sink);
    the best of ``runs``."""
    times = []
    with _sink_server(workdir) as url:
        for _ in range(runs):
            started = time.perf_counter()
            response = httpx.post(url, content=make_body(), headers=MULTIPART, timeout=3600)
            times.append(time.perf_counter() - started)
            assert response.status_code == 201
            shutil.rmtree(workdir / "sink-store" / "uploads", ignore_errors=True)
    return min(times)


@contextmanager
def _api_only(workdir: Path) -> Iterator[str]:
    """The API process alone, as the runner starts it (uvicorn), on its own data directory
    and a private Redis, with no worker: repeated POSTs then time the request only, not
    conversions of the previous POST's documents running beside it."""
    from tests.services import redis_server

    with redis_server(workdir / "redis") as redis:
        env = {
            **os.environ,
            "QUIRE_DATA_DIR": str(workdir / "data"),
            "QUIRE_BROKER_URL": redis.url,
            "QUIRE_LOG_LEVEL": "WARNING",
        }
        subprocess.run([sys.executable, "-m", "app.migrate"], cwd=REPO, env=env, check=True)
        port = free_port()
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=REPO,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)
            yield url
        finally:
            api.terminate()
            api.wait(timeout=60)


def _has_direct_uploads(client: httpx.Client, api: str) -> bool:
    """Whether this version of Quire offers direct uploads (POST /api/v1/uploads)."""
    paths = client.get(f"{api}/openapi.json", timeout=30).json().get("paths", {})
    return "/api/v1/uploads" in paths


def _direct_upload(client: httpx.Client, api: str, data: bytes) -> str:
    """The direct flow: ask for an upload, PUT the zip where it says, create the job."""
    offer = client.post(f"{api}/api/v1/uploads", json={"size": len(data)}, timeout=60)
    assert offer.status_code == 201, offer.text
    url, headers = offer.json()["url"], offer.json().get("headers", {})
    put = client.put(url, content=data, headers=headers, timeout=3600)
    assert put.status_code < 300, put.text
    job = client.post(
        f"{api}/api/v1/jobs", json={"upload_id": offer.json()["upload_id"]}, timeout=3600
    )
    _expect(job, 202)
    return str(job.json()["job_id"])


def measure_post(zip_bytes: bytes, workdir: Path, runs: int) -> dict[str, Any]:
    """The POST of the zip against the store-only endpoint, taken in turns (sink, POST, direct
    flow, sink, ...) so that all see the same machine.

    After each round, off the clock, the sink's object and the jobs are deleted, so every
    request writes into the same kind of memory. On a VM, pages the guest has not touched
    lately cost a fault on the host: writing 12 MB into fresh page cache measured 2.8 ms in
    one minute and 30 ms in the next. A baseline whose files were deleted each round while the
    POST's piled up compared warm writes with cold ones.
    """
    body = multipart_body(zip_bytes)
    times: dict[str, list[float]] = {"http_sink": [], "post": [], "direct": []}
    with _sink_server(workdir) as sink, _api_only(workdir / "api") as api, httpx.Client() as client:
        direct = _has_direct_uploads(client, api)

        def post() -> str:
            response = client.post(f"{api}/api/v1/jobs", content=body, headers=MULTIPART)
            _expect(response, 202)
            return str(response.json()["job_id"])

        def to_sink() -> None:
            _expect(client.post(sink, content=body, headers=MULTIPART), 201)

        steps: dict[str, Callable[[], str | None]] = {"http_sink": to_sink, "post": post}
        if direct:
            steps["direct"] = lambda: _direct_upload(client, api, zip_bytes)
        for run in range(runs + 1):  # the first round warms connections and code paths up
            made = []
            for name, step in steps.items():
                started = time.perf_counter()
                job_id = step()
                if run:
                    times[name].append(time.perf_counter() - started)
                if job_id is not None:
                    made.append(job_id)
            shutil.rmtree(workdir / "sink-store" / "uploads", ignore_errors=True)
            for job_id in made:
                _expect(client.delete(f"{api}/api/v1/jobs/{job_id}", timeout=600), 204)
    result: dict[str, Any] = {"runs": runs}
    for name, values in times.items():
        if values:
            result[f"{name}_seconds"] = min(values)
            result[f"{name}_median_seconds"] = statistics.median(values)
    # Each round's POST over the same round's sink: the pairs saw the same machine.
    for name in ("post", "direct"):
        if times[name]:
            pairs = zip(times[name], times["http_sink"], strict=True)
            result[f"{name}_over_http_sink_median"] = statistics.median(a / b for a, b in pairs)
    return result


def _expect(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text


def big_upload_body(megabytes: int, boundary: str) -> Iterator[bytes]:
    """A multipart body holding a valid zip of ``megabytes`` MiB, generated as it is sent."""
    from stream_zip import NO_COMPRESSION_64, stream_zip

    block = os.urandom(1024 * 1024)
    size = megabytes * len(block)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(block, crc)

    def chunks() -> Iterator[bytes]:
        for _ in range(megabytes):
            yield block

    member = ("big.docx", datetime(2026, 1, 1), 0o100644, NO_COMPRESSION_64(size, crc), chunks())

    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.zip"\r\nContent-Type: application/zip\r\n\r\n'
    ).encode()
    yield from stream_zip([member])
    yield f"\r\n--{boundary}--\r\n".encode()


def measure_large_job(count: int, k: int, workdir: Path) -> dict[str, Any]:
    """One job of ``count`` one-page documents: it completes, and its status stays cheap."""
    service = Service(workdir, k)
    try:
        started = time.time()
        job_id = service.submit_zip(bench_zip(count, 1, folder="large"))
        status = service.wait(job_id, interval=5.0)
        completed = datetime.fromisoformat(status["completed_at"].replace("Z", "+00:00"))
        polls = []
        for _ in range(5):
            poll_started = time.perf_counter()
            httpx.get(f"{service.url}/api/v1/jobs/{job_id}", timeout=60).raise_for_status()
            polls.append(time.perf_counter() - poll_started)
        return {
            "documents": count,
            "status": status["status"],
            "completed": status["progress"]["completed"],
            "failed": status["progress"]["failed"],
            "seconds": completed.timestamp() - started,
            "docs_per_second": count / (completed.timestamp() - started),
            "status_get_seconds": min(polls),
            "api_peak_rss_mb": _peak_rss_mb(service.pids("uvicorn")[0]),
        }
    finally:
        service.stop()


def measure_quire(
    zip_bytes: bytes, count: int, k: int, workdir: Path, big_mb: int, warmup_zip: bytes
) -> dict[str, Any]:
    service = Service(workdir, k)
    try:
        service.wait(service.submit_zip(warmup_zip))  # LibreOffice instances start here
        baseline = store_write_seconds(zip_bytes, workdir)
        body = multipart_body(zip_bytes)
        sink = http_sink_seconds(lambda: body, workdir)
        everyone = descendants(service.process.pid)
        cpu_before = _cpu_by_group(everyone)
        started_wall, started = time.time(), time.monotonic()
        job_id = service.submit(body, MULTIPART)
        post_seconds = time.monotonic() - started
        # Poll like a patient client; the end is the server's own completed_at (same machine,
        # same clock), so the polling interval adds no error.
        status = service.wait(job_id, interval=1.0)
        completed = datetime.fromisoformat(status["completed_at"].replace("Z", "+00:00"))
        total = completed.timestamp() - started_wall
        assert status["status"] == "COMPLETED", status["error_message"]
        assert status["progress"]["completed"] == count, status["progress"]
        cpu_after = _cpu_by_group(everyone)
        # CPU per document of each kind of process: where Quire's own time goes beside
        # LibreOffice's (processes that started during the job are not counted).
        cpu_ms = {
            group: round(1000 * (cpu_after[group] - cpu_before.get(group, 0.0)) / count, 2)
            for group in cpu_after
        }

        api_pid = service.pids("uvicorn")[0]
        pool = [pid for pid in service.pids("celery") if "worker" in cmdline(pid)]
        result: dict[str, Any] = {
            "seconds": total,
            "docs_per_second": count / total,
            "post_seconds": post_seconds,
            "store_write_seconds": baseline,
            "http_sink_seconds": sink,
            "cpu_ms_per_document": cpu_ms,
            "upload_bytes": len(zip_bytes),
            "result_bytes": status["result_bytes"],
            "api_peak_rss_mb": _peak_rss_mb(api_pid),
            "worker_peak_rss_mb": max(_peak_rss_mb(pid) for pid in pool),
            "libreoffice_peak_rss_mb": max(
                (_peak_rss_mb(pid) for pid in service.pids("soffice.bin")), default=0.0
            ),
        }
        probe = subprocess.run(
            [sys.executable, "-m", "tests.bench.archive_probe", job_id],
            cwd=REPO,
            env=service.env,
            check=True,
            capture_output=True,
            text=True,
        )
        result["archive"] = json.loads(probe.stdout.strip().splitlines()[-1])
        # The merged PDF of the same job (issue #18: under 300 MB at 1,000 files).
        merge_probe = subprocess.run(
            [sys.executable, "-m", "tests.bench.merge_probe", job_id],
            cwd=REPO,
            env=service.env,
            check=True,
            capture_output=True,
            text=True,
        )
        result["merge"] = json.loads(merge_probe.stdout.strip().splitlines()[-1])
        if big_mb:
            started = time.monotonic()
            service.submit(big_upload_body(big_mb, BOUNDARY), MULTIPART)
            result["big_upload"] = {
                "megabytes": big_mb,
                "seconds": time.monotonic() - started,
                "http_sink_seconds": http_sink_seconds(
                    lambda: big_upload_body(big_mb, BOUNDARY), workdir, runs=1
                ),
                "api_peak_rss_mb": _peak_rss_mb(api_pid),
            }
        return result
    finally:
        service.stop()


# -- the report ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000, help="documents per run")
    parser.add_argument("--pages", type=int, default=2, help="pages per document")
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=40,
        help="documents the naive baseline converts (it is slow)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings().worker_concurrency,
        help="worker processes and LibreOffice instances (K)",
    )
    parser.add_argument(
        "--big-upload-mb",
        type=int,
        default=1024,
        help="size of the large upload whose API memory is measured (0: skip)",
    )
    parser.add_argument(
        "--large-job",
        type=int,
        default=0,
        help="also run one job of this many one-page documents (0: skip)",
    )
    parser.add_argument(
        "--post-runs",
        type=int,
        default=5,
        help="POSTs of the zip (and store-only requests) timed against an idle API (0: skip)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "latest.json")
    fairness.add_arguments(parser)
    cluster_scaling.add_arguments(parser)
    args = parser.parse_args(argv)
    k, count = args.concurrency, args.documents
    if args.fairness_only:
        return _fairness_only(args)
    if args.cluster_only:
        return cluster_scaling.cluster_only(args)

    workdir = Path(tempfile.mkdtemp(prefix="quire-bench-"))
    try:
        zip_bytes = bench_zip(count, args.pages)
        sources = []
        for index in range(count):
            path = workdir / "docs" / f"doc-{index:05}.docx"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bench_docx(index, args.pages))
            sources.append(path)

        print(f"quire bench: {count} documents of {args.pages} pages, K={k}", flush=True)
        # The limit is measured before and after Quire, and averaged: the machine's speed
        # drifts over minutes, and Quire runs in between.
        limit_runs = [measure_limit(sources, k, workdir / "limit-before")]
        print(f"  limit: {count / limit_runs[0]:.2f} docs/s", flush=True)
        sample = sources[: args.naive_sample]
        naive = measure_naive(sample, k, workdir / "naive")
        print(f"  naive: {len(sample) / naive:.2f} docs/s", flush=True)
        quire = measure_quire(
            zip_bytes,
            count,
            k,
            workdir / "quire",
            args.big_upload_mb,
            bench_zip(2 * k, args.pages, folder="warmup"),
        )
        print(f"  quire: {quire['docs_per_second']:.2f} docs/s", flush=True)
        post = measure_post(zip_bytes, workdir / "post", args.post_runs) if args.post_runs else None
        limit_runs.append(measure_limit(sources, k, workdir / "limit-after"))
        print(f"  limit (again): {count / limit_runs[1]:.2f} docs/s", flush=True)
        limit = sum(limit_runs) / len(limit_runs)
        large = measure_large_job(args.large_job, k, workdir / "large") if args.large_job else None
        fair = (
            fairness.measure_fairness(fairness.options_from(args), k, workdir / "fairness", Service)
            if args.fairness
            else None
        )
        across_hosts = (
            cluster_scaling.measure_cluster(args.cluster_documents, args.pages, workdir / "cluster")
            if args.cluster
            else None
        )
    finally:
        if not os.environ.get("QUIRE_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)

    report: dict[str, Any] = {
        "machine": _machine(),
        "documents": count,
        "pages": args.pages,
        "concurrency": k,
        "limit": {
            "seconds": limit,
            "docs_per_second": count / limit,
            "runs_docs_per_second": [count / seconds for seconds in limit_runs],
        },
        "naive": {
            "documents": len(sample),
            "seconds": naive,
            "docs_per_second": len(sample) / naive,
        },
        "quire": quire,
        "ratios": {
            "quire_over_limit": quire["docs_per_second"] / (count / limit),
            "quire_over_naive": quire["docs_per_second"] / (len(sample) / naive),
            "post_over_store_write": quire["post_seconds"] / quire["store_write_seconds"],
            "post_over_http_sink": quire["post_seconds"] / quire["http_sink_seconds"],
        },
    }
    if post is not None:
        report["post"] = post
        # Best against best, measured in turns on an idle API: the figure the target is about.
        report["ratios"]["post_over_http_sink"] = post["post_seconds"] / post["http_sink_seconds"]
        report["ratios"]["post_over_http_sink_median"] = post["post_over_http_sink_median"]
        report["ratios"]["post_in_service_over_http_sink"] = (
            quire["post_seconds"] / quire["http_sink_seconds"]
        )
        if "direct_seconds" in post:
            report["ratios"]["direct_over_http_sink"] = (
                post["direct_seconds"] / post["http_sink_seconds"]
            )
    if large is not None:
        report["large_job"] = large
    if fair is not None:
        report["fairness"] = fair
    if across_hosts is not None:
        report["cluster"] = across_hosts
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    return 0


def _machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fairness_only(args: argparse.Namespace) -> int:
    """``--fairness-only``: the fairness scenario alone, reported the same way."""
    workdir = Path(tempfile.mkdtemp(prefix="quire-bench-"))
    try:
        fair = fairness.measure_fairness(
            fairness.options_from(args), args.concurrency, workdir / "fairness", Service
        )
    finally:
        if not os.environ.get("QUIRE_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "machine": _machine(),
        "pages": args.pages,
        "concurrency": args.concurrency,
        "fairness": fair,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(fairness.render_fairness(fair)))
    return 0


def _post_lines(report: dict[str, Any]) -> list[str]:
    quire, ratios = report["quire"], report["ratios"]
    size = f"{quire['upload_bytes'] / 1e6:.1f} MB"
    if "post" not in report:
        return [
            f"POST of the zip ({size}): {quire['post_seconds']:.3f} s; the same body to an HTTP "
            f"endpoint that only stores it: {quire['http_sink_seconds']:.3f} s (ratio "
            f"{ratios['post_over_http_sink']:.2f}, target <= 1.5); a plain file write: "
            f"{quire['store_write_seconds']:.3f} s"
        ]
    post = report["post"]
    lines = [
        f"POST of the zip ({size}), best of {post['runs']} in turns with an HTTP endpoint that "
        f"only stores the same body: {post['post_seconds']:.3f} s against "
        f"{post['http_sink_seconds']:.3f} s (ratio {ratios['post_over_http_sink']:.2f}, "
        f"median of the rounds' ratios {ratios['post_over_http_sink_median']:.2f}, "
        "target <= 1.5)",
        f"  during the end-to-end run (one POST): {quire['post_seconds']:.3f} s against "
        f"{quire['http_sink_seconds']:.3f} s (ratio "
        f"{ratios['post_in_service_over_http_sink']:.2f}); a plain file write: "
        f"{quire['store_write_seconds']:.3f} s",
    ]
    if "direct_seconds" in post:
        lines.append(
            f"  direct upload (offer, PUT to the store, create the job): "
            f"{post['direct_seconds']:.3f} s (ratio {ratios['direct_over_http_sink']:.2f})"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    quire, ratios = report["quire"], report["ratios"]
    rows = [
        ("limit: K warm LibreOffice instances", f"{report['limit']['docs_per_second']:.2f}"),
        ("naive: cold soffice --convert-to per file", f"{report['naive']['docs_per_second']:.2f}"),
        ("Quire end to end (POST to COMPLETED)", f"{quire['docs_per_second']:.2f}"),
    ]
    lines = [
        f"{report['documents']} documents x {report['pages']} pages, "
        f"K={report['concurrency']} on {report['machine']['cores']} cores",
        "",
        f"{'':44} docs/s",
        *(f"{name:44} {value:>6}" for name, value in rows),
        "",
        f"Quire / limit  {ratios['quire_over_limit']:.2f}   (target >= 0.85)",
        f"Quire / naive  {ratios['quire_over_naive']:.2f}   (target >= 6)",
        *_post_lines(report),
        "",
        f"peak RSS: API {quire['api_peak_rss_mb']:.0f} MB, worker process "
        f"{quire['worker_peak_rss_mb']:.0f} MB, LibreOffice {quire['libreoffice_peak_rss_mb']:.0f}"
        f" MB, archive build {quire['archive']['peak_rss_mb']:.0f} MB "
        f"({quire['archive']['pdfs']} PDFs, {quire['archive']['archive_bytes'] / 1e6:.1f} MB)",
        f"merged PDF build: peak RSS {quire['merge']['peak_rss_mb']:.0f} MB (target < 300) for "
        f"{quire['merge']['pdfs']} PDFs, {quire['merge']['pages']} pages, "
        f"{quire['merge']['merged_bytes'] / 1e6:.1f} MB in {quire['merge']['seconds']:.1f} s",
        "CPU ms per document during the job: "
        + ", ".join(
            f"{name} {ms:.1f}" for name, ms in sorted(quire["cpu_ms_per_document"].items())
        ),
    ]
    if "big_upload" in quire:
        big = quire["big_upload"]
        lines.append(
            f"a {big['megabytes']} MiB upload: POST {big['seconds']:.1f} s, store-only endpoint "
            f"{big['http_sink_seconds']:.1f} s (ratio "
            f"{big['seconds'] / big['http_sink_seconds']:.2f}); API peak RSS "
            f"{big['api_peak_rss_mb']:.0f} MB"
        )
    if "large_job" in report:
        large = report["large_job"]
        lines.append(
            f"one job of {large['documents']} documents: {large['status']} "
            f"({large['completed']} completed, {large['failed']} failed) in "
            f"{large['seconds']:.0f} s ({large['docs_per_second']:.1f} docs/s); its status "
            f"document answers in {large['status_get_seconds'] * 1000:.0f} ms"
        )
    if "fairness" in report:
        lines += ["", *fairness.render_fairness(report["fairness"])]
    if "cluster" in report:
        lines += ["", *cluster_scaling.render_cluster(report["cluster"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
