"""Run the embedded default on one machine: the private Redis, the API, the workers, the beat.

``make run`` calls this after bootstrapping. Everything lives under ``QUIRE_DATA_DIR``
(default ``.data/``): SQLite, the local object store, Redis's append-only file, scratch.
Ctrl-C or SIGTERM stops every process it started, in order (API, beat, workers, Redis), and
a second run on the same data directory resumes the jobs that were unfinished.

Environment: ``HOST`` (default 127.0.0.1), ``PORT`` (default 8000) and every ``QUIRE_*``
setting. When ``QUIRE_BROKER_URL`` is set, that broker is used instead of a private Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

PYTHON = sys.executable


def log(message: str) -> None:
    print(f"quire: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"quire: {what} exited during start-up (code {process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"quire: {what} did not start listening on port {port}")


def kill_stray_soffice(profiles_dir: Path) -> None:
    """LibreOffice instances whose worker was killed outright survive it; end them too."""
    marker = str(profiles_dir)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "soffice" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


class Runner:
    def __init__(self) -> None:
        self.data_dir = Path(os.environ.setdefault("QUIRE_DATA_DIR", ".data")).resolve()
        os.environ["QUIRE_DATA_DIR"] = str(self.data_dir)
        self.profiles_dir = self.data_dir / "libreoffice"  # Settings.libreoffice_profiles_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        self.stop_grace = 60.0  # until the settings are read

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this runner, which then stops the children
        # in order instead of all at once.
        process = subprocess.Popen(command, start_new_session=True)
        self.children.append((name, process))
        return process

    def start_redis(self) -> None:
        if "QUIRE_BROKER_URL" in os.environ:
            log(f"using the broker at {os.environ['QUIRE_BROKER_URL']}")
            return
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        process = self.spawn(
            "redis",
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                # The queue survives a restart: the append-only file keeps every message.
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
        )
        wait_for_port(port, process, "redis", 30)
        os.environ["QUIRE_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        log(f"private redis on 127.0.0.1:{port}")

    def run(self) -> int:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self.supervise()

    def start(self) -> None:
        host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
        from app.config import Settings, make_private_dir

        # 0700: it holds the signing key, the database and every upload (issue 12).
        make_private_dir(self.data_dir)
        kill_stray_soffice(self.profiles_dir)
        self.start_redis()

        settings = Settings()  # refuses to start on invalid settings, with the reason
        # A worker's warm shutdown waits for its running conversion: up to the hard limit.
        self.stop_grace = settings.task_hard_time_limit + 30
        subprocess.run([PYTHON, "-m", "app.migrate"], check=True)
        # No worker runs yet, so every file a previous run left IN_PROGRESS is an orphan: queue
        # it again now, before any worker could claim files of its own.
        subprocess.run(
            [
                PYTHON,
                "-c",
                "from app.config import get_settings; from workers.sweeper import sweep; "
                "sweep(get_settings(), resume_in_progress=True)",
            ],
            check=True,
        )
        self.spawn(
            "worker",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "workers.celery_app:celery",
                "worker",
                "--loglevel",
                "INFO",
                "--hostname",
                "quire@%h",
                "--without-gossip",
                "--without-mingle",
            ],
        )
        self.spawn(
            "beat",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "workers.celery_app:celery",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(self.data_dir / "beat-schedule"),
            ],
        )
        api = self.spawn(
            "api",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
            ],
        )
        wait_for_port(port, api, "the API", 60)
        log(f"ready: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")

    def supervise(self) -> int:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        code = 0
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None:
                    log(f"{name} exited unexpectedly (code {process.returncode}); stopping")
                    self.stopping, code = True, 1
                    break
            time.sleep(0.2)
        self.stop()
        return code

    def stop(self) -> None:
        log("stopping")
        order = ["api", "beat", "worker", "redis"]
        for name in order:
            for child_name, process in self.children:
                if child_name != name or process.poll() is not None:
                    continue
                process.terminate()  # Celery: warm shutdown, the running tasks finish
                try:
                    process.wait(timeout=self.stop_grace)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        kill_stray_soffice(self.profiles_dir)
        log("stopped")


if __name__ == "__main__":
    sys.exit(Runner().run())
