"""Fixtures: real services, and settings pointed at them for code running in this process."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import callback_targets, db, queue, scheduling, storage
from app.config import get_settings
from app.main import create_app
from app.migrate import upgrade
from tests.services import postgres_server, redis_server, s3_server

# LibreOffice's fixtures (module_converter, converter, make_uno_converter) are a plugin, so
# that only the tests that start LibreOffice import uno.
pytest_plugins = ["tests.plugins.libreoffice"]

# The shared corpus of real DOCX files lies beside the repository (in CI too).
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def reset_caches() -> None:
    """Forget every per-process singleton built from settings, so new settings take effect."""
    get_settings.cache_clear()
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()
    storage.get_store.cache_clear()
    queue.get_sender.cache_clear()
    scheduling.forget_live_slots()


# Names the tests' callback URLs use, and a public address each stands for. The machine's
# resolver lies off this machine: no test may send it a query, so names resolve from this table
# (a test that needs other answers replaces the resolver itself).
TEST_NAMES = {"example.com": "93.184.215.14", "hooks.example.org": "93.184.215.15"}


@pytest.fixture(autouse=True)
def no_dns_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        address = "127.0.0.1" if host == "localhost" else TEST_NAMES.get(host, host)
        try:
            socket.inet_pton(socket.AF_INET, address)
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a test name") from None
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(callback_targets, "getaddrinfo", resolve)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as server:
        yield server.endpoint


@dataclass(frozen=True)
class Backend:
    """Which database and object store the code under test uses."""

    name: str
    env: dict[str, str]


BACKENDS = ["sqlite-local", "postgres-s3"]


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
) -> Iterator[Backend]:
    """Settings for a fresh database and store, applied to this process (and its caches)."""
    env = {
        "QUIRE_DATA_DIR": str(tmp_path / "data"),
        "QUIRE_BROKER_URL": redis_url,
        "QUIRE_SECRET_KEY": "test-secret",
    }
    if request.param == "postgres-s3":
        postgres = request.getfixturevalue("postgres_url")
        endpoint = request.getfixturevalue("s3_endpoint")
        schema_db = _fresh_database(postgres, tmp_path.name)
        bucket = f"quire-{abs(hash(tmp_path.name)) % 10**10}"
        env |= {
            "QUIRE_DATABASE_URL": schema_db,
            "QUIRE_STORAGE_BACKEND": "s3",
            "QUIRE_S3_ENDPOINT_URL": endpoint,
            "QUIRE_S3_BUCKET": bucket,
            "QUIRE_S3_ACCESS_KEY": "test",
            "QUIRE_S3_SECRET_KEY": "test",
        }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    store = storage.get_store()
    if isinstance(store, storage.S3Store):
        store.ensure_bucket()
    yield Backend(request.param, env)
    db.get_engine().dispose()
    reset_caches()


def _fresh_database(server_url: str, name: str) -> str:
    """A new, empty database on the session's PostgreSQL server, one per test."""
    from sqlalchemy import create_engine, text

    database = "t_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower())[-50:]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{database}"


@dataclass
class SentTasks:
    """What the code under test sent to the broker, captured at the process boundary."""

    ingests: list[str]
    conversions: list[str]  # every conversion sent, handed over or not
    archives: list[str]
    handovers: list[str] = field(default_factory=list)  # sent again for a dead worker


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    captured = SentTasks([], [], [])
    monkeypatch.setattr(queue, "send_ingest", captured.ingests.append)
    monkeypatch.setattr(queue, "send_conversions", lambda ids: captured.conversions.extend(ids))

    def handovers(ids: Iterable[str]) -> None:
        ids = list(ids)
        captured.handovers.extend(ids)
        captured.conversions.extend(ids)

    monkeypatch.setattr(queue, "send_handovers", handovers)
    monkeypatch.setattr(queue, "send_archive", captured.archives.append)
    return captured


@pytest.fixture
def webhooks_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Webhook deliveries the code under test handed to the broker (the process boundary)."""
    captured: list[str] = []
    monkeypatch.setattr(
        queue, "send_webhook", lambda delivery_id, countdown=None: captured.append(delivery_id)
    )
    return captured


@pytest.fixture
def client(backend: Backend, sent: SentTasks) -> Iterator[TestClient]:
    """The whole API in-process, lifespan included, on ``backend`` with the broker captured.

    The one fixture of this name: a test that needs another app (API keys, no lifespan, one
    router) asks for a fixture named for what differs."""
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def corpus() -> Callable[[str], Path]:
    def find(name: str) -> Path:
        matches = sorted(CORPUS.rglob(name))
        assert matches, f"{name} is not in {CORPUS}"
        return matches[0]

    return find
