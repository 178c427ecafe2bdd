"""Real services for the tests, each started privately and stopped afterwards.

A private Redis, a throwaway PostgreSQL cluster (run as the ``postgres`` user: PostgreSQL
refuses to run as root) and moto's S3 server, which speaks real S3 over HTTP.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class RedisServer:
    """A private Redis; with ``durable`` it keeps an append-only file, so it can be restarted
    mid-job without losing the queue (as the compose stack's Redis does)."""

    workdir: Path
    port: int
    durable: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.durable else "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # a clean shutdown writes the append-only file
            self.process.wait(timeout=30)
            self.process = None


@contextmanager
def redis_server(workdir: Path, durable: bool = False) -> Iterator[RedisServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir, free_port(), durable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _as_postgres(command: list[str]) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *command], check=True, stdout=subprocess.DEVNULL
    )


@dataclass
class PostgresServer:
    """A throwaway cluster; ``stop`` and ``start`` make it briefly unreachable (fault tests)."""

    workdir: Path
    port: int

    @property
    def data(self) -> Path:
        return self.workdir / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/quire"

    def start(self) -> None:
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.workdir / "pg.log"),
                "-o",
                f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=200",
                "start",
            ]
        )

    def stop(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway cluster on a free port, with an empty database ``quire``.

    Its folder is made directly under /tmp and given to the postgres user (PostgreSQL refuses
    to run as root), away from pytest's own folders, which only root may enter.
    """
    workdir = Path(tempfile.mkdtemp(prefix="quire-pg-"))
    postgres = pwd.getpwnam("postgres")
    os.chown(workdir, postgres.pw_uid, postgres.pw_gid)
    server = PostgresServer(workdir, free_port())
    try:
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(server.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]
        )
        server.start()
        try:
            _as_postgres(
                [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "quire"]
            )
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class S3Server:
    """moto's S3 server. Its objects live in this process, so ``stop`` then ``start`` on the
    same port is an object store that was briefly unreachable and lost nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- processes ---------------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    """Every live process started, directly or not, by ``pid``."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found
