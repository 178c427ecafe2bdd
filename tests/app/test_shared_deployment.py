"""A deployment that may span hosts needs one QUIRE_SECRET_KEY (issue #17, item 6).

Without the setting each host generates a key of its own into its data directory. That is right
for SQLite (one host, one data directory) and wrong for a database server, which any number of
hosts may share: an upload or download URL signed by one API replica would be refused by the
next, and two workers would sign webhooks differently. So with a database server and no key the
API, every worker, beat and the embedded runner refuse to start, each through the same check
(app.config.check_before_start), and say what to do. The processes here are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, select, text, update

from app import transitions
from app.config import (
    SecretKeyRequired,
    Settings,
    check_before_start,
    get_settings,
    make_private_dir,
)
from app.db import make_engine, session_scope
from app.migrate import MIGRATION_LOCK, alembic_config, upgrade
from app.models import File, Worker
from app.queue import CONTROL_QUEUE, CONVERT_QUEUE
from app.webhooks import webhook_secret
from tests.app.helpers import make_job
from tests.conftest import Backend, _fresh_database
from tests.services import free_port
from workers.leases import Heartbeat, Held, Registration

REPO = Path(__file__).resolve().parents[2]
KEY = "9b1e4c7a2f5d8e0b3c6a9f2e5d8b1c4a"
SERVER_URL = "postgresql+psycopg://quire:pw-51c9@db.internal:5432/quire"

# What the refusal must tell an operator: what is missing, why it matters, how to make one.
REFUSAL = (
    "QUIRE_SECRET_KEY is not set",
    "QUIRE_DATABASE_URL names a database server",
    "refused by another",
    'python3 -c "import secrets; print(secrets.token_hex(32))"',
)


def assert_refusal(output: str) -> None:
    """``output`` says the whole refusal: on a line of its own, or as a JSON log line's message."""
    lines = output.splitlines()
    messages = [json.loads(line).get("message") or "" for line in lines if line.startswith("{")]
    said = [text for text in lines + messages if all(part in text for part in REFUSAL)]
    assert said, f"no line says {REFUSAL}:\n{output[-3000:]}"


def refused_events(output: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == "start.refused"]


# -- the check itself --------------------------------------------------------------------------


def test_a_database_server_without_a_key_is_refused_and_nothing_is_generated(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=SERVER_URL, secret_key="")
    assert settings.database_is_shared
    with pytest.raises(SystemExit) as refused:
        check_before_start(settings)
    assert_refusal(str(refused.value.code))
    # The lazy paths (a local store's URL, a webhook's signature) refuse alike instead of
    # generating a key of this host's own.
    with pytest.raises(SecretKeyRequired):
        settings.resolved_secret_key()
    with pytest.raises(SecretKeyRequired):
        webhook_secret(settings)
    assert not (tmp_path / "data").exists()


def test_a_database_server_with_a_key_signs_with_that_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=SERVER_URL, secret_key=KEY)
    check_before_start(settings)
    assert settings.resolved_secret_key() == KEY
    assert not (tmp_path / "data").exists()


def test_sqlite_without_a_key_generates_one_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key="")
    assert not settings.database_is_shared
    check_before_start(settings)
    generated = settings.resolved_secret_key()
    assert len(generated) == 64
    assert (tmp_path / "data" / "secret_key").read_text().strip() == generated


# -- the real processes ------------------------------------------------------------------------


def environment(data_dir: Path, **values: str) -> dict[str, str]:
    """This machine's environment without any QUIRE_* of the test run's, plus ``values``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUIRE_")}
    make_private_dir(data_dir)
    return {
        **env,
        "QUIRE_DATA_DIR": str(data_dir),
        "QUIRE_CONVERTER": "fake",
        "QUIRE_WORKER_CONCURRENCY": "1",
        "QUIRE_LOG_FORMAT": "json",
        **values,
    }


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    """A Redis database of this module's own, emptied before and after."""
    url = redis_url.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def server_database(request: pytest.FixtureRequest, postgres_url: str) -> str:
    """A fresh, migrated PostgreSQL database: the shape of a deployment of several hosts."""
    url = _fresh_database(postgres_url, request.node.name[-40:])
    upgrade(url)
    return url


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str], dict[str, str]], Process]]:
    """Starts a process of Quire's (in a session of its own) and ends it after the test."""
    started: list[Process] = []

    def run(command: list[str], env: dict[str, str]) -> Process:
        process = Process(command, env, tmp_path / f"process-{len(started)}.log")
        started.append(process)
        return process

    yield run
    for process in started:
        process.end()


class Process:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.popen = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_code(self, timeout: float = 120) -> int:
        """It refused: the code it exited with (it must exit on its own)."""
        return self.popen.wait(timeout=timeout)

    def until(self, check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
        """Wait for ``check`` while the process lives; a process that exits fails the test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            if self.popen.poll() is not None:
                raise AssertionError(f"exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"never: {what}\n{self.output()[-3000:]}")

    def end(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


def api(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]


def worker(name: str) -> list[str]:
    return [
        *(sys.executable, "-m", "workers", "-A", "workers.celery_app:celery", "worker"),
        *("--hostname", name, "--without-mingle", "--without-gossip", "--without-heartbeat"),
    ]


BEAT = [
    *(sys.executable, "-m", "workers", "-A", "workers.celery_app:celery", "beat"),
    *("--scheduler", "celery.beat:Scheduler"),
]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def registered(database_url: str, name: str) -> bool:
    """Whether the worker called ``name`` is in the workers' registry: it started and beat."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(Worker.name).where(Worker.name == name)) is not None
    finally:
        engine.dispose()


def test_the_api_refuses_a_database_server_without_a_key_and_starts_with_one(
    start: Callable[[list[str], dict[str, str]], Process],
    server_database: str,
    broker: str,
    tmp_path: Path,
) -> None:
    shared = {"QUIRE_DATABASE_URL": server_database, "QUIRE_BROKER_URL": broker}
    refused = start(api(free_port()), environment(tmp_path / "refused", **shared))
    assert refused.exit_code() != 0
    assert_refusal(refused.output())
    # Its reason is a log line of its own, not only the last line of uvicorn's traceback.
    assert [event["level"] for event in refused_events(refused.output())] == ["ERROR"]
    assert not (tmp_path / "refused" / "secret_key").exists()

    port = free_port()
    keyed = start(api(port), environment(tmp_path / "keyed", **shared, QUIRE_SECRET_KEY=KEY))
    keyed.until(lambda: healthy(port), "the API answers /healthz")
    assert not (tmp_path / "keyed" / "secret_key").exists()


def test_the_api_on_sqlite_starts_without_a_key(
    start: Callable[[list[str], dict[str, str]], Process], broker: str, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    single_host = start(api(port), environment(data, QUIRE_BROKER_URL=broker))
    single_host.until(lambda: healthy(port), "the API answers /healthz")
    assert "QUIRE_SECRET_KEY" not in single_host.output()


def test_a_worker_refuses_a_database_server_without_a_key_and_starts_with_one(
    start: Callable[[list[str], dict[str, str]], Process],
    server_database: str,
    broker: str,
    tmp_path: Path,
) -> None:
    shared = {"QUIRE_DATABASE_URL": server_database, "QUIRE_BROKER_URL": broker}
    name = f"shared-{os.getpid()}@host-a"
    refused = start(worker(name), environment(tmp_path / "refused", **shared))
    assert refused.exit_code() != 0
    assert_refusal(refused.output())
    assert not registered(server_database, name)

    keyed = start(worker(name), environment(tmp_path / "keyed", **shared, QUIRE_SECRET_KEY=KEY))
    keyed.until(lambda: registered(server_database, name), "the worker registers")
    assert not (tmp_path / "keyed" / "secret_key").exists()
    # Without QUIRE_PUBLIC_URL its webhooks' links would name its own loopback: it says so.
    assert "webhooks.local_links" in keyed.output()


def test_a_worker_given_the_public_url_does_not_warn_about_webhook_links(
    start: Callable[[list[str], dict[str, str]], Process],
    server_database: str,
    broker: str,
    tmp_path: Path,
) -> None:
    name = f"public-{os.getpid()}@host-b"
    env = environment(
        tmp_path / "data",
        QUIRE_DATABASE_URL=server_database,
        QUIRE_BROKER_URL=broker,
        QUIRE_SECRET_KEY=KEY,
        QUIRE_PUBLIC_URL="https://quire.example.com",
    )
    public = start(worker(name), env)
    public.until(lambda: registered(server_database, name), "the worker registers")
    assert "webhooks.local_links" not in public.output()


def test_a_worker_on_sqlite_starts_without_a_key(
    start: Callable[[list[str], dict[str, str]], Process], broker: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    make_private_dir(data)
    database = f"sqlite:///{data / 'quire.db'}"
    upgrade(database)
    name = f"single-{os.getpid()}@host-a"
    single_host = start(worker(name), environment(data, QUIRE_BROKER_URL=broker))
    single_host.until(lambda: registered(database, name), "the worker registers")
    assert "webhooks.local_links" not in single_host.output()  # its API is on this host


def test_beat_refuses_a_database_server_without_a_key_and_schedules_sweeps_with_one(
    start: Callable[[list[str], dict[str, str]], Process],
    server_database: str,
    broker: str,
    tmp_path: Path,
) -> None:
    shared = {
        "QUIRE_DATABASE_URL": server_database,
        "QUIRE_BROKER_URL": broker,
        "QUIRE_SWEEP_INTERVAL": "1",
    }
    queue = redis.Redis.from_url(broker)
    refused = start(BEAT, environment(tmp_path / "refused", **shared))
    assert refused.exit_code() != 0
    assert_refusal(refused.output())
    assert queue.llen(CONTROL_QUEUE) == 0  # it sent no sweep before it refused

    keyed = start(BEAT, environment(tmp_path / "keyed", **shared, QUIRE_SECRET_KEY=KEY))
    keyed.until(lambda: queue.llen(CONTROL_QUEUE) > 0, "beat sends a sweep")
    queue.close()


def test_the_embedded_runner_refuses_a_database_server_without_a_key_before_starting_anything(
    start: Callable[[list[str], dict[str, str]], Process],
    server_database: str,
    broker: str,
    tmp_path: Path,
) -> None:
    env = environment(
        tmp_path / "data",
        QUIRE_DATABASE_URL=server_database,
        QUIRE_BROKER_URL=broker,  # no private Redis either
        PORT=str(free_port()),
    )
    runner = start([sys.executable, "infra/run_embedded.py"], env)
    assert runner.exit_code() != 0
    assert_refusal(runner.output())
    assert "ready:" not in runner.output()  # no API, worker or beat was started
    assert not (tmp_path / "data" / "secret_key").exists()


# -- one node name on two hosts ----------------------------------------------------------------


def name_shared_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "event", None) == "worker.name_shared"
    ]


def test_a_worker_whose_node_name_another_live_worker_renews_says_so_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quire.leases")
    engine = make_engine(get_settings().resolved_database_url)
    host_a = Heartbeat(engine, 30, held=Held, registration=Registration("quire@same", 3))
    host_b = Heartbeat(engine, 30, held=Held, registration=Registration("quire@same", 3))
    host_a.beat()
    host_a.beat()  # its own renewals are not another's
    assert name_shared_warnings(caplog) == []
    host_b.beat()  # its first beat has nothing of its own to compare with
    host_a.beat()  # finds b's renewal where its own should be
    host_a.beat()
    assert len(name_shared_warnings(caplog)) == 1
    host_b.beat()
    assert len(name_shared_warnings(caplog)) == 2  # b finds a's
    engine.dispose()


def test_a_worker_restarted_under_its_name_while_the_dead_ones_registration_lives_is_quiet(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quire.leases")
    engine = make_engine(get_settings().resolved_database_url)
    killed = Heartbeat(engine, 30, held=Held, registration=Registration("quire@host", 3))
    killed.beat()  # then SIGKILLed: no clean stop, its registration lives on for a lease
    restarted = Heartbeat(engine, 30, held=Held, registration=Registration("quire@host", 3))
    for _ in range(3):
        restarted.beat()
    assert name_shared_warnings(caplog) == []
    with session_scope() as session:
        assert session.scalars(select(Worker.slots)).all() == [3]  # one row, one host's slots
    engine.dispose()


# -- two upgrades at once ----------------------------------------------------------------------


def test_an_upgrade_waits_for_another_one_running_and_then_finds_the_schema_at_head(
    start: Callable[[list[str], dict[str, str]], Process],
    request: pytest.FixtureRequest,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    database = _fresh_database(postgres_url, request.node.name[-40:])
    engine = create_engine(database)
    with engine.connect() as holder:
        # This connection stands for an upgrade under way: it holds the migration lock.
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        holder.commit()
        env = environment(tmp_path / "data", QUIRE_DATABASE_URL=database)
        second = start([sys.executable, "-m", "app.migrate"], env)
        second.until(lambda: waiting_for_advisory_lock(engine), "the upgrade waits for the lock")
        assert not schema_revision(engine)  # it created nothing while it waited
        holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        holder.commit()
    assert second.exit_code() == 0, second.output()
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    assert schema_revision(engine) == head
    engine.dispose()


def waiting_for_advisory_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
        )
    return bool(waiting)


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        revision: str | None = connection.scalar(text("SELECT version_num FROM alembic_version"))
        return revision


# -- make run beside other hosts ---------------------------------------------------------------


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_embedded", REPO / "infra/run_embedded.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_runners_resume_takes_claimed_files_only_where_no_other_host_can_hold_them(
    backend: Backend, broker: str, tmp_path: Path
) -> None:
    """The sweep ``make run`` makes before its workers start: with SQLite a claimed file is its
    last run's orphan; with a database server, a live lease may be another host's worker."""
    _, (running, _waiting) = make_job(2)
    with session_scope() as session:
        session.execute(update(File).where(File.id == running).values(input_bytes=10))
        token = transitions.claim_file(session, running)
    env = {**os.environ, **backend.env, "QUIRE_BROKER_URL": broker}
    subprocess.run(
        [sys.executable, "-c", load_runner().RESUME_SWEEP],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    sent = redis.Redis.from_url(broker).llen(CONVERT_QUEUE)
    with session_scope() as session:
        claim = session.scalar(select(File.lease_token).where(File.id == running))
    if backend.name == "sqlite-local":
        assert sent == 1  # queued again at once
    else:
        assert sent == 0  # left to the worker whose lease runs
        assert claim == token
