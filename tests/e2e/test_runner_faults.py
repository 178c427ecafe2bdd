"""The runner supervises (issue 15): a process of ``make run`` killed with SIGKILL under a job
is started again, the job completes with every file accounted for once, and a crash loop stops
everything with exit code 1. Each test runs the same job undisturbed first and records in the
ledger the seconds the fault added to it."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from tests.e2e.conftest import FaultRecord, Service, soffice_processes_under
from tests.e2e.helpers import (
    compose_like_env,
    embedded_env,
    kill_runner_process,
    restarted,
    run_batch,
    runner_process,
    text_batch,
)
from tests.services import cmdline

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

BASE_ENV = {"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "runner-faults"}
DOCUMENTS = 30
# Every LibreOffice starts on its first document: a small job first, so the undisturbed job
# and the faulted one both run on warm instances and their difference is the fault's.
WARM_UP = 4
# infra/run_embedded.py's CRASH_LOOP_RESTARTS: one more death than this within a minute is a
# crash loop.
CRASH_LOOP_RESTARTS = 5


def restart_line(name: str) -> str:
    return f"quire: {name} exited unexpectedly (code -9); restarting in 0.5 s (restart 1 in"


def test_beat_killed_mid_job_is_restarted_and_sweeps_go_on(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    # Direct uploads never used are removed by a sweep twice QUIRE_PRESIGNED_URL_TTL after they
    # were offered: one offered before the kill and gone after the restart proves that a sweep
    # ran, to its end, under the new beat.
    service = make_service(
        {**BASE_ENV, "QUIRE_SWEEP_INTERVAL": "1", "QUIRE_PRESIGNED_URL_TTL": "10"}
    )
    service.start()
    run_batch(service, ledger, text_batch(WARM_UP, "warm"))
    undisturbed = run_batch(service, ledger, text_batch(DOCUMENTS, "calm"))
    upload_objects = service.data_dir / "objects" / "uploads"
    offered: list[Path] = []

    def kill_beat(_job_id: str) -> None:
        offer = httpx.post(f"{service.url}/api/v1/uploads", json={}, timeout=30).json()
        put = httpx.put(offer["url"], content=b"never made a job", headers=offer["headers"])
        assert put.is_success, put.text
        offered.append(upload_objects / offer["upload_id"] / "source.zip")
        dead = kill_runner_process(service, "beat")
        ledger.faults.append("kill -9 beat")
        restarted(service, "beat", dead)
        assert offered[0].exists()  # not swept yet when beat died

    faulted = run_batch(service, ledger, text_batch(DOCUMENTS, "beat"), kill_beat)
    ledger.added_seconds = faulted - undisturbed
    assert restart_line("beat") in service.log_path.read_text(errors="replace")
    deadline = time.monotonic() + 120  # a bound for a broken service, not a timed assertion
    while offered[0].exists():
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.5)
    log = service.log_path.read_text(errors="replace")
    assert "Sending due task sweep" in log.split(restart_line("beat"), 1)[1]
    assert service.stop() == 0


def test_the_private_redis_killed_mid_job_comes_back_with_its_queue(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    service = make_service(BASE_ENV)
    service.start()
    run_batch(service, ledger, text_batch(WARM_UP, "warm"))
    undisturbed = run_batch(service, ledger, text_batch(DOCUMENTS, "calm"))
    log = service.log_path.read_text(errors="replace")
    found = re.search(r"quire: private redis on 127\.0\.0\.1:(\d+)", log)
    assert found is not None, service.log_tail()
    port = found[1]

    def kill_redis(_job_id: str) -> None:
        dead = kill_runner_process(service, "redis")
        ledger.faults.append("kill -9 the private redis")
        # The same port: in its command line as given, or as redis-server retitles itself.
        assert re.search(rf"[: ]{port}( |$)", cmdline(restarted(service, "redis", dead)))

    faulted = run_batch(service, ledger, text_batch(DOCUMENTS, "redis"), kill_redis)
    ledger.added_seconds = faulted - undisturbed
    assert restart_line("redis") in service.log_path.read_text(errors="replace")
    assert (service.data_dir / "redis" / "appendonlydir").is_dir()  # the same append-only file
    # The API's connection to the broker came back too: a new job is sent and converted.
    run_batch(service, ledger, text_batch(WARM_UP, "after"))
    assert service.stop() == 0


def test_a_crash_loop_stops_everything_with_exit_code_1(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    service = make_service(BASE_ENV)
    service.start()
    assert service.process is not None
    redis = runner_process(service, "redis")
    assert redis is not None
    victim = runner_process(service, "beat")
    assert victim is not None
    for kill in range(CRASH_LOOP_RESTARTS + 1):
        if kill:
            victim = restarted(service, "beat", victim)
        os.kill(victim, signal.SIGKILL)
        ledger.faults.append("kill -9 beat")
    code = service.process.wait(timeout=300)
    service.process = None
    assert code == 1
    log = service.log_path.read_text(errors="replace")
    assert "(restart 5 in the last 60 s)" in log
    assert (
        "quire: beat exited unexpectedly (code -9) after 5 restarts in the last 60 s: "
        "beat is crash-looping; stopping everything"
    ) in log
    assert log.rstrip().endswith("quire: stopped")
    # Everything else was stopped with it, not left running.
    assert not Path(f"/proc/{redis}").exists() or "redis" not in cmdline(redis)
    assert soffice_processes_under(service.data_dir) == []


MiB = 1024 * 1024


class StalledUpload:
    """A multipart upload that sends 12 MiB of its zip (past the API's 4 MiB write batch and
    S3's 8 MiB part, so the store holds some of it), then waits for ``go_on`` to send the rest."""

    boundary = "runner-faults-boundary"

    def __init__(self) -> None:
        self.go_on = threading.Event()
        self.error: httpx.HTTPError | None = None
        self.answer: httpx.Response | None = None

    def body(self) -> Iterator[bytes]:
        yield (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        for _ in range(12):
            yield os.urandom(MiB)
        self.go_on.wait(timeout=300)
        for _ in range(4):
            yield os.urandom(MiB)
        yield f"\r\n--{self.boundary}--\r\n".encode()

    def send(self, url: str) -> None:
        try:
            self.answer = httpx.post(
                f"{url}/api/v1/jobs",
                content=self.body(),
                headers={"Content-Type": f"multipart/form-data; boundary={self.boundary}"},
                timeout=300,
            )
        except httpx.HTTPError as error:  # what the client sees when the API dies under it
            self.error = error


def upload_leftovers(service: Service) -> set[str]:
    """Everything under ``uploads/`` in the service's store: whole objects by key, a partial
    file or an unfinished S3 multipart upload as ``unfinished:<key>``."""
    if service.env.get("QUIRE_STORAGE_BACKEND") == "s3":
        client = boto3.client(
            "s3",
            endpoint_url=service.env["QUIRE_S3_ENDPOINT_URL"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        bucket = service.env["QUIRE_S3_BUCKET"]
        found = {
            item["Key"]
            for item in client.list_objects_v2(Bucket=bucket, Prefix="uploads/").get("Contents", [])
        }
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix="uploads/")
        return found | {f"unfinished:{u['Key']}" for u in uploads.get("Uploads", [])}
    objects = service.data_dir / "objects"
    return {
        f"unfinished:{path.relative_to(objects)}"
        if path.name.endswith(".part")
        else str(path.relative_to(objects))
        for path in (objects / "uploads").rglob("*")
        if path.is_file()
    }


def serving(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def job_ids(service: Service, ledger: FaultRecord) -> set[str]:
    listed = ledger.get(f"{service.url}/api/v1/jobs").json()
    return {job["job_id"] for job in listed["jobs"]}


ORPHAN_GRACE = 10


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3-redis"])
def test_the_api_killed_mid_upload_leaves_no_job(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    stack: str,
) -> None:
    env = embedded_env() if stack == "embedded" else compose_like_env(request)
    # Sweeps every 2 s, and what a dead upload left is an orphan once idle for 10 s: longer than
    # the kill and the look that follows it take on a loaded machine (with 2 s, a sweep removed
    # it in between once, in a CI run), short enough that the test does not wait long for it.
    service = make_service(
        {**env, "QUIRE_ORPHAN_UPLOAD_GRACE": str(ORPHAN_GRACE), "QUIRE_SWEEP_INTERVAL": "2"}
    )
    service.start()
    run_batch(service, ledger, text_batch(WARM_UP, "warm"))
    batch = text_batch(DOCUMENTS, "calm")
    undisturbed = run_batch(service, ledger, batch)
    jobs_before = job_ids(service, ledger)

    started = time.monotonic()
    upload = StalledUpload()
    sender = threading.Thread(target=upload.send, args=(service.url,))
    sender.start()
    deadline = time.monotonic() + 60  # a bound for a broken test, not a timed assertion
    while not any(key.startswith("unfinished:") for key in upload_leftovers(service)):
        assert time.monotonic() < deadline and sender.is_alive(), (upload.answer, upload.error)
        time.sleep(0.05)
    dead = kill_runner_process(service, "api")
    ledger.faults.append("kill -9 the API mid-upload")
    # Read at once: a sweep removes it as soon as it has been idle for the grace.
    leftovers = upload_leftovers(service)
    assert any(key.startswith("unfinished:") for key in leftovers), leftovers
    upload.go_on.set()
    sender.join(timeout=120)
    assert upload.answer is None
    assert isinstance(upload.error, httpx.TransportError), upload.error  # reset, not an answer

    restarted(service, "api", dead)
    deadline = time.monotonic() + 60
    while not serving(service):
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.2)
    assert job_ids(service, ledger) == jobs_before  # no job from the broken upload

    # The client sends the same job again: the fault's cost is the time until it is done.
    run_batch(service, ledger, batch)
    ledger.added_seconds = time.monotonic() - started - undisturbed

    jobs = job_ids(service, ledger)
    kept = {f"uploads/{job_id}/source.zip" for job_id in jobs}
    deadline = time.monotonic() + 120
    # The sweeper (beat's schedule, through the worker) removes what the dead upload left.
    while upload_leftovers(service) != kept:
        assert time.monotonic() < deadline, (upload_leftovers(service), service.log_tail())
        time.sleep(0.5)
    assert service.stop() == 0
