"""Run the embedded default on one machine: the private Redis, the API, the workers, the beat.

``make run`` calls this after bootstrapping. Everything lives under ``QUIRE_DATA_DIR``
(default ``.data/``): SQLite, the local object store, Redis's append-only file, scratch.
Ctrl-C or SIGTERM stops every process it started, in order (API, beat, workers, Redis; the
workers' running conversions finish, a process still running past its grace is killed), and
a second run on the same data directory resumes the jobs that were unfinished.

The runner supervises: a process that dies while it is not stopping (the OOM killer's SIGKILL,
a crash) is started again, the same way, after a back-off that doubles with each restart. Only a
crash loop (``CRASH_LOOP_RESTARTS`` restarts of one process within ``CRASH_LOOP_WINDOW``
seconds, and it died again) stops everything, with exit code 1.

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
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType

PYTHON = sys.executable

# Restart back-off: the first restart waits FIRST_RESTART_DELAY seconds, each further one twice
# as long, up to MAX_RESTART_DELAY, so a process that cannot start does not spin the machine.
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
# A process that stayed up this long was healthy: its next exit starts the back-off afresh.
STABLE_AFTER = 30.0
# One process restarted this many times within this many seconds, dying again, is a crash
# loop: restarting it once more would not help, so the runner stops everything and says which.
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW = 60.0

# The sweep before any worker of this runner starts. With SQLite no worker can be running yet,
# so every file a previous run left IN_PROGRESS is an orphan: it is queued again at once. With
# a database server, workers of other hosts may be converting such files right now: there the
# ordinary sweep decides, from the leases, and re-sends this host's orphans once theirs run out.
RESUME_SWEEP = (
    "from app.config import get_settings; from workers.sweeper import sweep; "
    "settings = get_settings(); "
    "sweep(settings, resume_in_progress=not settings.database_is_shared)"
)


# Seconds a process other than a worker (whose running conversions finish: stop_grace) has to
# end after its SIGTERM. Beat holds no work (its schedule is in memory), and it can lose the
# signal: Celery's handler closes the scheduler's publishing connection before it raises
# SystemExit, and when the signal lands while beat publishes a sweep, the ValueError ("I/O
# operation on closed file") from that publish replaces the SystemExit and is logged as a
# failed send; beat then runs on (seen once in a fault test whose sweep runs every 2 s).
STOP_GRACE = {"api": 60.0, "beat": 10.0, "redis": 60.0}


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


def live_processes(matches: Callable[[int, str], bool]) -> list[int]:
    """Processes (not zombies) for which ``matches(process group, command line)`` holds."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[3])
        if state != "Z" and matches(group, cmdline):
            found.append(int(proc.name))
    return found


def kill_and_wait(pids: Callable[[], list[int]], timeout: float = 10.0) -> None:
    """SIGKILL what ``pids`` lists until it lists nothing (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while (left := pids()) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def kill_stray_soffice(profiles_dir: Path) -> None:
    """LibreOffice instances whose worker was killed outright survive it (each runs in a session
    of its own, out of the worker's group); end them too, and wait until they are gone."""
    marker = str(profiles_dir)
    kill_and_wait(lambda: live_processes(lambda _, cmd: "soffice" in cmd and marker in cmd))


def kill_process_group(group: int) -> None:
    """End what is left of a dead process's group, and wait until it is gone. Celery's pool
    processes die with their main process (billiard sets PR_SET_PDEATHSIG; here within 50 ms of
    a SIGKILL, busy or not), but nothing else in the group would, nor a child forked then."""
    kill_and_wait(lambda: live_processes(lambda pgid, _: pgid == group))


class Supervised:
    """One process the runner keeps running: how to start it, and its restart history.

    (A plain class, not a dataclass: this file is also loaded by path, outside sys.modules,
    where dataclasses cannot resolve postponed annotations.)
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        before_restart: Callable[[Supervised], None] | None = None,
    ) -> None:
        self.name = name
        self.command = command
        # Runs before every restart (not the first start), with the dead process still recorded.
        self.before_restart = before_restart
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts: deque[float] = deque()  # when it was restarted, within the window
        self.next_delay = FIRST_RESTART_DELAY
        self.restart_at: float | None = None  # set while it waits out its back-off

    def start(self, now: float) -> None:
        if self.process is not None and self.before_restart is not None:
            self.before_restart(self)
        # A session of its own: Ctrl-C reaches only this runner, which then stops the children
        # in order instead of all at once; and a dead process's leftovers are one group.
        self.process = subprocess.Popen(self.command, start_new_session=True)
        self.started_at, self.restart_at = now, None

    def exited(self, now: float) -> float | None:
        """It died unexpectedly at ``now``: the seconds to wait before restarting it, or None
        when that would be a crash loop (``CRASH_LOOP_RESTARTS`` within the window already)."""
        while self.restarts and now - self.restarts[0] > CRASH_LOOP_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= CRASH_LOOP_RESTARTS:
            return None
        if now - self.started_at >= STABLE_AFTER:
            self.next_delay = FIRST_RESTART_DELAY
        delay = self.next_delay
        self.next_delay = min(delay * 2, MAX_RESTART_DELAY)
        self.restarts.append(now)
        self.restart_at = now + delay
        return delay


class Runner:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = Path(os.environ.setdefault("QUIRE_DATA_DIR", ".data")).resolve()
        os.environ["QUIRE_DATA_DIR"] = str(self.data_dir)
        self.profiles_dir = self.data_dir / "libreoffice"  # Settings.libreoffice_profiles_dir
        self.children: list[Supervised] = []
        self.stopping = False
        self.stop_grace = 60.0  # until the settings are read
        self.clock = clock

    def spawn(
        self,
        name: str,
        command: list[str],
        before_restart: Callable[[Supervised], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        child = Supervised(name, command, before_restart)
        child.start(self.clock())
        self.children.append(child)
        assert child.process is not None
        return child.process

    def clean_up_after_worker(self, worker: Supervised) -> None:
        """Before a new worker starts: nothing of the dead one may keep running, so two
        LibreOffice instances never share a profile and no orphaned conversion goes on."""
        assert worker.process is not None
        kill_process_group(worker.process.pid)  # its session's id, and its group's
        kill_stray_soffice(self.profiles_dir)

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
        from app.config import Settings, check_before_start, make_private_dir

        # 0700: it holds the signing key, the database and every upload (issue 12).
        make_private_dir(self.data_dir)
        kill_stray_soffice(self.profiles_dir)
        self.start_redis()

        settings = Settings()  # refuses to start on invalid settings, with the reason
        # The refusals of the API, workers and beat, said once here instead of by each child
        # (in a crash loop) after Redis and the migration ran.
        check_before_start(settings)
        # A worker's warm shutdown waits for its running conversion: up to the hard limit.
        self.stop_grace = settings.task_hard_time_limit + 30
        subprocess.run([PYTHON, "-m", "app.migrate"], check=True)
        subprocess.run([PYTHON, "-c", RESUME_SWEEP], check=True)
        self.spawn(
            "worker",
            [
                PYTHON,
                "-m",
                "workers",  # the celery command, Quire's package first (workers/__main__.py)
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
            before_restart=self.clean_up_after_worker,
        )
        self.spawn(
            "beat",
            [
                PYTHON,
                "-m",
                "workers",  # the celery command, Quire's package first (workers/__main__.py)
                "-A",
                "workers.celery_app:celery",
                "beat",
                "--loglevel",
                "WARNING",
                # The schedule in memory, not in a shelve file that a SIGKILL can leave half
                # written: a restarted beat always starts, and its first sweep comes one
                # QUIRE_SWEEP_INTERVAL later (the sweep is the only entry).
                "--scheduler",
                "celery.beat:Scheduler",
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
            if self.check(self.clock()) is not None:
                code = 1
                break
            time.sleep(0.2)
        self.stop()
        return code

    def check(self, now: float) -> Supervised | None:
        """One round of supervision: notice exits, schedule their restarts, start those due.
        Returns the process that crash-looped, if one did. Never blocks on a back-off, so the
        other processes stay supervised while one waits."""
        for child in self.children:
            assert child.process is not None
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start(now)
                continue
            code = child.process.poll()
            if code is None:
                continue
            delay = child.exited(now)
            window = f"in the last {CRASH_LOOP_WINDOW:.0f} s"
            if delay is None:
                log(
                    f"{child.name} exited unexpectedly (code {code}) after "
                    f"{len(child.restarts)} restarts {window}: {child.name} is crash-looping; "
                    "stopping everything"
                )
                return child
            log(
                f"{child.name} exited unexpectedly (code {code}); restarting in {delay:.1f} s "
                f"(restart {len(child.restarts)} {window})"
            )
        return None

    def stop(self) -> None:
        log("stopping")
        order = ["api", "beat", "worker", "redis"]
        for name in order:
            for child in self.children:
                process = child.process
                if child.name != name or process is None or process.poll() is not None:
                    continue
                process.terminate()  # Celery: warm shutdown, the running tasks finish
                try:
                    process.wait(timeout=STOP_GRACE.get(name, self.stop_grace))
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        # A worker that died and was not restarted yet may have left pool children behind.
        for child in self.children:
            if child.name == "worker" and child.process is not None:
                kill_process_group(child.process.pid)
        kill_stray_soffice(self.profiles_dir)
        log("stopped")


if __name__ == "__main__":
    sys.exit(Runner().run())
