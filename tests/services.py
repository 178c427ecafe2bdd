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
from pathlib import Path

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


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _as_postgres(command: list[str]) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *command], check=True, stdout=subprocess.DEVNULL
    )


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway cluster on a free port; yields a SQLAlchemy URL to a fresh database.

    Its folder is made directly under /tmp and given to the postgres user (PostgreSQL refuses
    to run as root), away from pytest's own folders, which only root may enter.
    """
    workdir = Path(tempfile.mkdtemp(prefix="quire-pg-"))
    data = workdir / "pgdata"
    postgres = pwd.getpwnam("postgres")
    os.chown(workdir, postgres.pw_uid, postgres.pw_gid)
    port = free_port()
    try:
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        )
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(workdir / "pg.log"),
                "-o",
                f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=200",
                "start",
            ]
        )
        try:
            _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "quire"])
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/quire"
        finally:
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
