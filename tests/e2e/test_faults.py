"""Fault injection: real processes, real faults, and every file accounted for exactly once.

Each test runs the service as ``make run`` does (or in the compose stack's shape), injects
faults while a job runs, and settles the job: it must complete, every good file must have
exactly one PDF with its own text, and the client must see no 5xx. What each test did is
recorded in the ledger that pytest prints at the end as the "fault injection" table.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import redis
import sqlalchemy
from pypdf import PdfReader

from tests.docx_factory import make_docx, make_zip
from tests.e2e.conftest import FaultRecord, Service, soffice_processes_under
from tests.e2e.helpers import compose_like_env
from tests.services import S3Server, cmdline, descendants, parent_of, postgres_server, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


FILLER = " ".join(["Filler text that only makes the document longer to lay out."] * 40)


def numbered_zip(
    count: int, folder: str = "batch", filler_pages: int = 0
) -> tuple[bytes, dict[str, str]]:
    """A zip of ``count`` documents, each with its own text on its first page: entry name ->
    that text. ``filler_pages`` more pages make each one take longer to convert."""
    markers = {f"{folder}/doc-{i:03}.docx": f"Fault test document {i}" for i in range(count)}
    documents = {
        name: make_docx(text, *([FILLER] * filler_pages)) for name, text in markers.items()
    }
    return make_zip(documents), markers


def first_page_text(pdf: bytes) -> str:
    """The text of a PDF's first page, where each document has its own (the rest is filler)."""
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text() or ""


def submit(service: Service, ledger: FaultRecord, data: bytes, count: int) -> str:
    response = httpx.post(
        f"{service.url}/api/v1/jobs",
        files={"file": ("batch.zip", data, "application/zip")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    ledger.inputs += count
    ledger.jobs += 1
    return str(response.json()["job_id"])


def wait(
    service: Service,
    ledger: FaultRecord,
    job_id: str,
    timeout: float = 300,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Poll the job until ``until`` (by default: it ended). Gives up after ``timeout`` seconds,
    or sooner when the test's budget runs out (``ledger.deadline``, ahead of pytest-timeout),
    with what the service's state says about why the job did not get there."""
    done = until or (lambda status: status["status"] in ("COMPLETED", "FAILED"))
    deadline = time.monotonic() + min(timeout, ledger.seconds_left())
    while time.monotonic() < deadline:
        response = ledger.get(f"{service.url}/api/v1/jobs/{job_id}")
        if response.status_code == 200:
            status: dict[str, Any] = response.json()
            if done(status):
                return status
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there:\n{diagnosis(service, job_id)}")


def settle(
    service: Service,
    ledger: FaultRecord,
    job_id: str,
    markers: dict[str, str],
    timeout: float = 300,
) -> dict[str, Any]:
    """Wait for the end, then account for every file: its PDF, once, with its own text."""
    status = wait(service, ledger, job_id, timeout)
    files = {f["filename"]: f for f in status["files"]}
    lost = [name for name, f in files.items() if f["status"] not in ("COMPLETED", "FAILED")]
    if status["status"] == "COMPLETED":
        ledger.jobs_completed += 1
        download = httpx.get(str(status["download_url"]), follow_redirects=True, timeout=120)
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            names = archive.namelist()
            ledger.duplicates += len(names) - len(set(names))
            for name, text in markers.items():
                pdf = files[name]["output_name"]
                if files[name]["status"] != "COMPLETED" or pdf not in names:
                    lost.append(name)
                elif text not in first_page_text(archive.read(pdf)):
                    lost.append(name)  # a PDF, but not this document's
    else:
        lost += list(markers)
    ledger.files_lost += len(set(lost))
    assert status["status"] == "COMPLETED", (status["error_message"], diagnosis(service, job_id))
    assert not lost, f"lost: {sorted(set(lost))[:5]}"
    assert ledger.duplicates == 0
    assert ledger.server_errors == 0
    return status


def _section(title: str, read: Callable[[], list[str]]) -> str:
    try:
        lines = read()
    except Exception as error:  # noqa: BLE001 - a diagnosis must never hide the failure
        lines = [f"(unreadable: {error!r})"]
    return "\n".join([f"-- {title}", *lines])


def _database_url(service: Service) -> str:
    return service.env.get("QUIRE_DATABASE_URL") or f"sqlite:///{service.data_dir / 'quire.db'}"


def _job_rows(service: Service, job_id: str, where: dict[str, str]) -> list[str]:
    """The job's row, its unfinished files with their leases and where their conversion
    message is (``where``; "nowhere": in no broker list and not unacknowledged, so lost unless
    a live worker is just taking it), and the sweep lock."""
    engine = sqlalchemy.create_engine(_database_url(service))
    try:
        with engine.connect() as connection:
            run = connection.execute
            job = run(
                sqlalchemy.text(
                    "SELECT status, finished_files, file_count, lease_expires_at,"
                    " archive_enqueued_at FROM jobs WHERE id = :job"
                ),
                {"job": job_id},
            ).one_or_none()
            counts = run(
                sqlalchemy.text(
                    "SELECT status, count(*) FROM files WHERE job_id = :job GROUP BY status"
                ),
                {"job": job_id},
            ).all()
            unfinished = run(
                sqlalchemy.text(
                    "SELECT id, filename, status, attempts, lease_expires_at, lease_token,"
                    " touched_at, input_bytes IS NOT NULL"
                    " FROM files WHERE job_id = :job AND status NOT IN ('COMPLETED', 'FAILED')"
                    " ORDER BY position"
                ),
                {"job": job_id},
            ).all()
            locks = run(sqlalchemy.text("SELECT name, holder, expires_at FROM locks")).all()
    finally:
        engine.dispose()
    return [
        f"now (UTC) {datetime.now(UTC).replace(tzinfo=None)}",
        f"job: {tuple(job) if job else None} (status, finished, count, lease, archive sent)",
        f"files by status: {dict((str(status), n) for status, n in counts)}",
        *(
            f"  {name} {status} attempts={attempts} lease={lease} "
            f"token={(token or '-')[:8]} touched={touched} "
            f"message={where.get(id_, 'nowhere') if copied else '(input not copied yet)'}"
            for id_, name, status, attempts, lease, token, touched, copied in unfinished[:25]
        ),
        *([f"  ... and {len(unfinished) - 25} more"] if len(unfinished) > 25 else []),
        f"locks: {[tuple(lock) for lock in locks]}",
    ]


def _converted_file(payload: dict[str, Any]) -> str | None:
    """The file id of a conversion message as kombu's Redis transport stores it (Celery's
    protocol 2, as app.queue reads it), or None for any other message."""
    if payload.get("headers", {}).get("task") != "quire.convert":
        return None
    body = payload["body"]
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return str(json.loads(body)[0][0])


def _broker_state(service: Service) -> tuple[list[str], dict[str, str]]:
    """Every key of the broker's database with its length (the queues by priority, the unacked
    set), and where each conversion message is: "queued" or "unacked"."""
    url = service.env.get("QUIRE_BROKER_URL")
    if url is None:
        found = re.findall(r"private redis on (127\.0\.0\.1:\d+)", service.log_path.read_text())
        url = f"redis://{found[-1]}/0"
    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    lines, where = [], {}
    try:
        for key in sorted(client.scan_iter(count=1000)):
            kind = str(client.type(key))
            size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard}.get(kind)
            lines.append(f"  {key!r} {kind} {size(key) if size else ''}")
            if kind == "list" and key.startswith("quire-convert"):
                for raw in client.lrange(key, 0, -1):
                    where[_converted_file(json.loads(raw)) or ""] = "queued"
        for raw in client.hvals("unacked"):
            where[_converted_file(json.loads(raw)[0]) or ""] = "unacked"
    finally:
        client.close()
    return lines, where


def _processes(service: Service) -> list[str]:
    """The runner's process tree and every LibreOffice of this service, with their states
    (T: stopped; a process left stopped holds its work forever)."""
    pids = descendants(service.process.pid) if service.process is not None else []
    lines = []
    for pid in [*pids, *(p for p in soffice_processes_under(service.data_dir) if p not in pids)]:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        lines.append(f"  {pid} parent={parent_of(pid)} {state} {cmdline(pid)[:110]}")
    return lines


def _notable_log_lines(service: Service) -> list[str]:
    """The runner's own lines, warnings and errors, and every sweep: the story of a stuck job
    that the tail alone, full of routine lines, does not tell."""
    notable = [
        line
        for line in service.log_path.read_text(errors="replace").splitlines()
        if line.startswith("quire:")
        or '"sweep.' in line
        or any(f'"level": "{level}"' in line for level in ("WARNING", "ERROR", "CRITICAL"))
        or "Traceback" in line
    ]
    return notable[-60:]


def diagnosis(service: Service, job_id: str) -> str:
    """What a job that did not finish left behind, for the failure's message: the database's
    rows, the broker's keys, the processes, and the log (``service.log_path`` has all of it)."""
    broker: tuple[list[str], dict[str, str]] = ([], {})

    def read_broker() -> list[str]:
        nonlocal broker
        broker = _broker_state(service)
        return broker[0]

    broker_section = _section("broker", read_broker)  # first: the database rows name its places
    return "\n".join(
        [
            f"service log: {service.log_path}",
            _section("database", lambda: _job_rows(service, job_id, broker[1])),
            broker_section,
            _section("processes", lambda: _processes(service)),
            _section("notable log lines", lambda: _notable_log_lines(service)),
            _section("log tail", lambda: service.log_tail(40).splitlines()),
        ]
    )


def pool_children(service: Service) -> list[int]:
    """The Celery worker's pool processes (each drives one LibreOffice)."""
    assert service.process is not None
    workers = [
        pid
        for pid in descendants(service.process.pid)
        if "celery" in cmdline(pid) and " worker" in cmdline(pid)
    ]
    return [pid for pid in workers if parent_of(pid) in workers]


def a_pool_child(service: Service, timeout: float = 60) -> int:
    """A pool process to kill; waits while Celery replaces the ones killed before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = pool_children(service)
        if children:
            return children[0]
        time.sleep(0.2)
    raise AssertionError(f"the worker has no pool process:\n{service.log_tail()}")


def work_folder(service: Service, pool_process: int) -> Path:
    """The folder where ``pool_process``'s LibreOffice converts (workers/libreoffice/uno.py): it
    holds the document from the moment it is staged, after the file's claim, until the
    conversion is over, and the PDF once LibreOffice starts writing it."""
    return service.data_dir / "libreoffice" / f"lo-{pool_process}" / "work"


def converting(service: Service, pool_process: int) -> bool:
    try:
        return any(work_folder(service, pool_process).iterdir())
    except OSError:
        return False


def stop_a_converting_pool_process(service: Service, timeout: float = 60) -> int:
    """SIGSTOP a pool process caught converting, and return it (still stopped): what it holds is
    a claimed file, so killing it now strands that file. Between two documents a pool process
    holds nothing, and a kill then would test nothing."""
    deadline = time.monotonic() + timeout  # a bound for a broken test, not a timed assertion
    while time.monotonic() < deadline:
        for pid in pool_children(service):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                if converting(service, pid):
                    return pid
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"no pool process was caught converting:\n{service.log_tail()}")


def kill_libreoffice_mid_conversion(service: Service, timeout: float = 60) -> int:
    """SIGKILL a LibreOffice (soffice.bin) while a document is in its hands, and return its pid.

    Its pool process and it are both stopped first, so neither moves on while the work folder
    is read: the document is staged and no PDF is written yet. Killed then, the conversion's
    next call to LibreOffice fails and the worker retries it on a fresh instance."""
    deadline = time.monotonic() + timeout  # a bound for a broken test, not a timed assertion
    while time.monotonic() < deadline:
        for holder in pool_children(service):
            instances = [
                pid
                for pid in soffice_processes_under(service.data_dir)
                if "soffice.bin" in cmdline(pid) and re.search(rf"/lo-{holder}\b", cmdline(pid))
            ]
            if not instances:
                continue  # a new pool process, its LibreOffice not started yet
            stopped = [holder, *instances]
            with contextlib.suppress(ProcessLookupError):
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)
                folder = work_folder(service, holder)
                if converting(service, holder) and not (folder / "document.pdf").exists():
                    for pid in instances:
                        os.kill(pid, signal.SIGKILL)
                    os.kill(holder, signal.SIGCONT)
                    return instances[0]
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"no LibreOffice was caught converting:\n{service.log_tail()}")


def progress_at_least(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status["progress"]["completed"] + status["progress"]["failed"] >= count


def midway(service: Service, ledger: FaultRecord, job_id: str, count: int) -> None:
    """Wait until ``count`` files are done, and make sure the job is still running then."""
    status = wait(service, ledger, job_id, until=progress_at_least(count))
    assert status["progress"]["percent"] < 100, "the job ended before the fault was injected"


BASE_ENV = {"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "faults"}
# Pages that make a document take longer to convert, so a job outlasts the faults injected in it.
FILLER_PAGES = 10


def test_worker_processes_and_libreoffice_killed_mid_job(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    service = make_service(BASE_ENV)
    service.start()
    # Long enough that the job is far from its end at the last fault: 60 one-page documents were
    # all done, on a loaded machine, before the test's poll saw 44 of them.
    data, markers = numbered_zip(120, filler_pages=FILLER_PAGES)
    job_id = submit(service, ledger, data, len(markers))
    for threshold in (8, 20, 32):
        midway(service, ledger, job_id, threshold)
        victim = stop_a_converting_pool_process(service)
        os.kill(victim, signal.SIGKILL)  # its task is given back to the queue
        ledger.faults.append(f"kill -9 worker process {victim} mid-conversion")
    midway(service, ledger, job_id, 44)
    log_before = service.log_path.stat().st_size
    soffice = kill_libreoffice_mid_conversion(service)
    ledger.faults.append(f"kill -9 soffice.bin {soffice} mid-conversion")
    settle(service, ledger, job_id, markers)
    # The mechanism: the conversion LibreOffice died under was tried again on a fresh instance.
    retries = events(log_since(service, log_before), "convert.retry")
    assert any(event["after"] == "ConverterCrashed" for event in retries), service.log_tail()
    assert service.stop() == 0
    assert soffice_processes_under(service.data_dir) == []


def test_a_hung_libreoffice_is_killed_and_its_document_converted(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord
) -> None:
    service = make_service({**BASE_ENV, "QUIRE_CONVERSION_TIMEOUT": "5"})
    service.start()
    # Enough documents that the stopped instance is handed another one: with 30, a fast run
    # could finish them all on the other worker right after the stop.
    data, markers = numbered_zip(120)
    job_id = submit(service, ledger, data, len(markers))
    midway(service, ledger, job_id, 5)
    hung = soffice_processes_under(service.data_dir)[0]
    group = os.getpgid(hung)
    os.killpg(group, signal.SIGSTOP)  # it stops answering, as a hung LibreOffice does
    ledger.faults.append("SIGSTOP a LibreOffice instance")
    settle(service, ledger, job_id, markers)
    # The watchdog killed the whole stopped group: nothing of it is left, not even a zombie.
    time.sleep(1)
    assert not [
        pid for pid in soffice_processes_under(service.data_dir) if os.getpgid(pid) == group
    ]
    assert "libreoffice.timeout" in service.log_path.read_text()


class Stoppable(Protocol):
    def stop(self) -> None: ...
    def start(self) -> None: ...


def outage_mid_job(
    service: Service, ledger: FaultRecord, dependency: Stoppable, name: str, seconds: float
) -> None:
    """Run a job, take ``dependency`` away for ``seconds`` while it runs, and settle the job."""
    service.start()
    data, markers = numbered_zip(50)
    job_id = submit(service, ledger, data, len(markers))
    midway(service, ledger, job_id, 10)
    dependency.stop()
    ledger.faults.append(f"{name} stopped")
    time.sleep(seconds)  # workers meet connection errors and retry with backoff
    dependency.start()
    ledger.faults.append(f"{name} started again")
    settle(service, ledger, job_id, markers)
    service.stop()


def test_the_broker_restarted_mid_job(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis", durable=True) as redis:
        service = make_service({**BASE_ENV, "QUIRE_BROKER_URL": redis.url})
        outage_mid_job(service, ledger, redis, "redis", 3)


def test_the_database_briefly_unreachable(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord, redis_url: str
) -> None:
    with postgres_server() as database:
        service = make_service(
            {
                **BASE_ENV,
                "QUIRE_DATABASE_URL": database.url,
                "QUIRE_BROKER_URL": redis_url.replace("/0", "/6"),
            }
        )
        outage_mid_job(service, ledger, database, "postgresql", 4)


def test_the_object_store_briefly_unreachable(
    make_service: Callable[[dict[str, str]], Service], ledger: FaultRecord, redis_url: str
) -> None:
    store = S3Server()
    store.start()
    try:
        service = make_service(
            {
                **BASE_ENV,
                "QUIRE_BROKER_URL": redis_url.replace("/0", "/7"),
                "QUIRE_STORAGE_BACKEND": "s3",
                "QUIRE_S3_ENDPOINT_URL": store.endpoint,
                "QUIRE_S3_BUCKET": "faults",
                "QUIRE_S3_ACCESS_KEY": "test",
                "QUIRE_S3_SECRET_KEY": "test",
            }
        )
        outage_mid_job(service, ledger, store, "object store", 4)
    finally:
        store.stop()


@pytest.mark.parametrize("kind", ["full", "not-writable"])
def test_scratch_full_or_unwritable(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    tmp_path: Path,
    kind: str,
) -> None:
    scratch = tmp_path / "scratch"
    if kind == "full":
        scratch.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(scratch)], check=True
        )
        (scratch / "filler").write_bytes(b"\0" * 28 * 1024)  # what is left holds no document
    else:
        (tmp_path / "a-file").write_text("not a folder")
        scratch = tmp_path / "a-file" / "scratch"
    ledger.faults.append(f"scratch space {kind}")
    try:
        service = make_service({**BASE_ENV, "QUIRE_SCRATCH_DIR": str(scratch)})
        service.start()
        data, markers = numbered_zip(4)
        job_id = submit(service, ledger, data, len(markers))
        status = wait(service, ledger, job_id)
        service.stop()
    finally:
        if kind == "full":
            subprocess.run(["umount", str(scratch)], check=True)
    # Nothing could be converted, and every file says why: accounted for, not lost.
    assert status["status"] == "FAILED"
    assert "No file could be converted" in status["error_message"]
    for file in status["files"]:
        assert file["status"] == "FAILED"
        assert "scratch space is full or not writable" in file["error_message"]
    assert ledger.server_errors == 0


def test_finished_jobs_expire_with_their_objects(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
) -> None:
    service = make_service({**BASE_ENV, "QUIRE_JOB_TTL": "2", "QUIRE_SWEEP_INTERVAL": "1"})
    service.start()
    data, markers = numbered_zip(2)
    job_id = submit(service, ledger, data, len(markers))
    status = settle(service, ledger, job_id, markers)
    signed = httpx.get(str(status["download_url"]), follow_redirects=False).headers["location"]
    ledger.faults.append("time to live passed")
    deadline = time.monotonic() + 60
    while ledger.get(f"{service.url}/api/v1/jobs/{job_id}").status_code != 404:
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.5)
    gone = ledger.get(f"{service.url}/api/v1/jobs/{job_id}").json()
    assert "removed after QUIRE_JOB_TTL" in gone["error"]["message"]
    assert ledger.get(signed).status_code == 404  # the archive itself is gone too
    objects = service.data_dir / "objects"
    assert not list(objects.rglob(f"*{job_id}*"))
    service.stop()


# -- a dead worker's files are handed on (issue #15) ------------------------------------------

# Short leases and sweeps, so the test takes seconds; the mechanism is the same at 20 s and 10 s.
LEASE_ENV = {**BASE_ENV, "QUIRE_LEASE_SECONDS": "6", "QUIRE_SWEEP_INTERVAL": "2"}


def worker_main_process(service: Service) -> int:
    """The Celery worker's main process, which holds the broker connection: its pool
    processes' parent."""
    main = parent_of(a_pool_child(service))
    assert "celery" in cmdline(main), service.log_tail()
    return main


def signal_each(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a pool process may have just exited
            os.kill(pid, signum)


def freeze_while_converting(
    service: Service, ledger: FaultRecord, job_id: str, main: int, victims: str
) -> int:
    """Stop the processes about to be killed (the pool processes, or the main process with
    them) at a moment when the job has files IN_PROGRESS, and return how many. Read while they
    are stopped, an IN_PROGRESS file is one a stopped process holds: its kill strands it."""
    group = os.getpgid(main)
    deadline = time.monotonic() + 120  # a bound for a broken test, not a timed assertion
    while True:
        # The pool processes only, or the main process with them (one process group).
        stopped = [pid for pid in descendants(main) if parent_of(pid) == main]
        send = partial(signal_each, stopped) if victims == "main" else partial(os.killpg, group)
        send(signal.SIGSTOP)
        try:
            status = ledger.get(f"{service.url}/api/v1/jobs/{job_id}").json()
        except BaseException:
            send(signal.SIGCONT)  # never left stopped: it would hold its files forever
            raise
        held = sum(int(f["status"] == "IN_PROGRESS") for f in status["files"])
        if held:
            return held
        send(signal.SIGCONT)
        assert status["status"] not in ("COMPLETED", "FAILED"), "the job ended first"
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.02)


def handed_on(log_text: str) -> int:
    """Files the sweeper re-sent for a lease that ran out or a message a dead worker held."""
    count = 0
    for line in log_text.splitlines():
        if '"sweep.lease_expired"' in line:
            event = json.loads(line[line.index("{") :])
            count += int(event["files"]) + int(event["unacked"])
    return count


def undisturbed_seconds(
    service: Service, ledger: FaultRecord, data: bytes, markers: dict[str, str]
) -> float:
    """The job run once without a fault: the seconds from its submission to its end."""
    started = time.monotonic()
    job_id = submit(service, ledger, data, len(markers))
    wait(service, ledger, job_id)
    seconds = time.monotonic() - started
    settle(service, ledger, job_id, markers)
    return seconds


def postgres_s3_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {
        **compose_like_env(request),
        "QUIRE_BROKER_URL": request.getfixturevalue("redis_url").replace("/0", "/8"),
    }


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3"])
@pytest.mark.parametrize("victims", ["main", "every"])
def test_a_killed_worker_hands_its_files_on(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    stack: str,
    victims: str,
) -> None:
    env = LEASE_ENV if stack == "embedded" else {**LEASE_ENV, **postgres_s3_env(request)}
    service = make_service(env)
    service.start()
    warm_up, warm_up_markers = numbered_zip(4, folder="warm-up")
    settle(service, ledger, submit(service, ledger, warm_up, 4), warm_up_markers)
    data, markers = numbered_zip(40, filler_pages=FILLER_PAGES)
    # The same job undisturbed, on warm LibreOffice instances: what the fault is measured against.
    undisturbed = undisturbed_seconds(service, ledger, data, markers)

    started = time.monotonic()
    job_id = submit(service, ledger, data, len(markers))
    midway(service, ledger, job_id, 8)
    main = worker_main_process(service)
    log_before = service.log_path.stat().st_size
    # Killed while converting: a pair of conversions takes about 0.1 s here, and between two
    # pairs the worker may hold nothing at all, which would leave the sweeper nothing to do.
    frozen = freeze_while_converting(service, ledger, job_id, main, victims)
    ledger.faults.append(f"SIGSTOP the worker holding {frozen} file(s) IN_PROGRESS")
    if victims == "main":
        # What the OOM killer does to the biggest process. Its pool processes die with it
        # (billiard sets PR_SET_PDEATHSIG), taking the files they were converting.
        os.kill(main, signal.SIGKILL)
        ledger.faults.append("kill -9 the Celery worker's main process")
    else:
        # The main process and its pool processes at once (one process group): no worker is
        # left until the runner starts a new one.
        os.killpg(os.getpgid(main), signal.SIGKILL)
        ledger.faults.append("kill -9 every worker process at once")
    # Seconds at most, when the sweeper hands the files on: a job still running after minutes is
    # stuck, and fails here with its diagnosis, well before pytest-timeout would stop the test.
    wait(service, ledger, job_id, timeout=240)
    ledger.added_seconds = round(time.monotonic() - started - undisturbed, 1)
    settle(service, ledger, job_id, markers)
    with open(service.log_path, "rb") as log:
        log.seek(log_before)
        after_the_kill = log.read().decode(errors="replace")
    # The mechanism: the sweeper re-sent what the dead worker held, for its lease or its
    # unacknowledged message (the job would otherwise wait QUIRE_STALE_AFTER, 15 minutes).
    assert handed_on(after_the_kill) > 0, service.log_tail()
    assert service.stop() == 0


# Enough documents that their ingest lasts long enough to be killed half-way: it commits them in
# batches of 50, about 0.05 s each here, and the kill comes right after the first.
INGESTED_DOCUMENTS = 500


def events(log_text: str, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of the event ``name``."""
    return [
        json.loads(line[line.index("{") :]) for line in log_text.splitlines() if f'"{name}"' in line
    ]


def log_since(service: Service, offset: int) -> str:
    with open(service.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def first_ingest_batch(service: Service, job_id: str, offset: int, timeout: float = 60) -> None:
    """Wait until the job's ingest committed its first batch: it is unpacking the zip now.
    Reads only what the log gained since the last look, so the kill follows within a few ms."""
    deadline = time.monotonic() + timeout
    unread = b""
    with open(service.log_path, "rb") as log:
        log.seek(offset)
        while time.monotonic() < deadline:
            unread += log.read()
            *lines, unread = unread.split(b"\n")
            batches = events(b"\n".join(lines).decode(errors="replace"), "ingest.batch")
            if any(event.get("job_id") == job_id for event in batches):
                return
            time.sleep(0.005)
    raise AssertionError(f"the ingest never started:\n{service.log_tail()}")


@pytest.mark.parametrize("stack", ["embedded", "postgres-s3"])
def test_a_worker_killed_during_an_ingest_hands_the_ingest_on(
    make_service: Callable[[dict[str, str]], Service],
    ledger: FaultRecord,
    request: pytest.FixtureRequest,
    stack: str,
) -> None:
    env = LEASE_ENV if stack == "embedded" else {**LEASE_ENV, **postgres_s3_env(request)}
    service = make_service(env)
    service.start()
    warm_up, warm_up_markers = numbered_zip(4, folder="warm-up")
    settle(service, ledger, submit(service, ledger, warm_up, 4), warm_up_markers)
    data, markers = numbered_zip(INGESTED_DOCUMENTS)
    undisturbed = undisturbed_seconds(service, ledger, data, markers)

    main = worker_main_process(service)  # found first: the kill must not wait for it
    log_before = service.log_path.stat().st_size
    started = time.monotonic()
    job_id = submit(service, ledger, data, len(markers))
    first_ingest_batch(service, job_id, log_before)
    os.kill(main, signal.SIGKILL)  # its pool processes die with it, the ingest's among them
    ledger.faults.append("kill -9 the Celery worker's main process mid-ingest")
    wait(service, ledger, job_id)
    ledger.added_seconds = round(time.monotonic() - started - undisturbed, 1)
    settle(service, ledger, job_id, markers)
    # The mechanism: the sweeper re-sent the dead worker's ingest, for its job's expired lease or
    # its unacknowledged message (it would otherwise wait QUIRE_STALE_AFTER, 15 minutes). Only
    # an ingest that had not finished is re-sent: this also shows the kill came mid-ingest.
    resent = events(log_since(service, log_before), "sweep.lease_expired")
    assert sum(int(event["jobs"]) for event in resent) > 0, service.log_tail()
    assert sum(int(event["ingests"]) for event in resent) > 0, service.log_tail()
    assert service.stop() == 0
