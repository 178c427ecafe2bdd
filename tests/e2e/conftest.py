"""The real service as separate processes: ``infra/run_embedded.py``, exactly what ``make run``
starts (private Redis or a given broker, the API under uvicorn, Celery workers and beat)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED"}


@dataclass
class Service:
    """One run of the embedded runner; ``start`` again on the same data dir to restart it."""

    data_dir: Path
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            **self.env,
            "PORT": str(self.port),
            "QUIRE_DATA_DIR": str(self.data_dir),
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "infra/run_embedded.py"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the service died:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the service did not become ready:\n{self.log_tail()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=180)
        self.process = None
        return code

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = 300,
        until: Callable[[dict[str, object]], bool] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status: dict[str, object] = httpx.get(
                f"{self.url}/api/v1/jobs/{job_id}", timeout=10, headers=headers
            ).json()
            if (until or (lambda s: s["status"] in TERMINAL))(status):
                return status
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not finish:\n{self.log_tail()}")


def soffice_processes_under(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if "soffice" in cmdline and str(path) in cmdline and state != "Z":
                found.append(int(proc.name))
    return found


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Service]]:
    services: list[Service] = []

    def factory(env: dict[str, str]) -> Service:
        service = Service(data_dir=tmp_path / "data", env=env, log_path=tmp_path / "service.log")
        services.append(service)
        return service

    yield factory
    for service in services:
        if service.process is not None:
            service.stop()


# -- the fault-injection ledger ----------------------------------------------------------------


@dataclass
class FaultRecord:
    """What one fault test did and what came out of it; printed as a table after the run."""

    test: str
    faults: list[str] = field(default_factory=list)
    inputs: int = 0  # files uploaded
    jobs: int = 0
    jobs_completed: int = 0
    files_lost: int = 0  # a good file without its PDF, or a file left unfinished
    duplicates: int = 0  # a PDF twice in an archive
    server_errors: int = 0  # 5xx answers seen by the test's client
    # Seconds the fault added: the faulted job's time minus the same job's undisturbed time,
    # both measured in the same test (None: the test has no undisturbed run to compare with).
    added_seconds: float | None = None
    # When the test's own waits give up (monotonic clock): well before pytest-timeout's limit,
    # so a stuck job fails with its diagnosis instead of a bare timeout.
    deadline: float = float("inf")

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A GET that counts every 5xx answer against the service."""
        response = httpx.get(url, timeout=60, **kwargs)
        if response.status_code >= 500:
            self.server_errors += 1
        return response


LEDGER: list[FaultRecord] = []


# What a fault test keeps of pytest-timeout's limit for itself: stopping the service after a
# failure (a worker's warm shutdown) counts against that limit too.
TEARDOWN_RESERVE = 120.0


def timeout_limit_of(request: pytest.FixtureRequest) -> float | None:
    """The test's pytest-timeout limit in seconds: its marker, else --timeout, else the ini."""
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    option = request.config.getoption("timeout", None)
    setting = option if option is not None else request.config.getini("timeout")
    return float(setting) if setting else None


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> FaultRecord:
    record = FaultRecord(test=request.node.name)
    limit = timeout_limit_of(request)
    if limit:
        record.deadline = time.monotonic() + limit - TEARDOWN_RESERVE
    LEDGER.append(record)
    return record


# -- the hostile-input ledger -------------------------------------------------------------------


@dataclass
class HostileRecord:
    """One kind of hostile input sent through the real service (tests/e2e/test_hostile.py)."""

    kind: str
    tried: int = 0  # inputs of this kind sent
    leaked: int | None = None  # PDFs holding a secret the document reached for (None: no PDFs)
    server_errors: int = 0  # 5xx answers
    api_peak_rss_mb: float = 0.0  # the API process's peak RSS while this kind was sent


HOSTILE_LEDGER: list[HostileRecord] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    _print_fault_ledger(terminalreporter)
    _print_hostile_ledger(terminalreporter)


def _print_hostile_ledger(terminalreporter: Any) -> None:
    if not HOSTILE_LEDGER:
        return
    write = terminalreporter.write_line
    terminalreporter.section("hostile input")
    write(f"{'kind':52} {'tried':>6} {'leaked':>6} {'5xx':>4} {'API peak RSS':>13}")
    for r in HOSTILE_LEDGER:
        write(
            f"{r.kind[:52]:52} {r.tried:>6} {'-' if r.leaked is None else r.leaked:>6} "
            f"{r.server_errors:>4} "
            f"{r.api_peak_rss_mb:>9.0f} MiB"
        )
    write(
        f"{'total':52} {sum(r.tried for r in HOSTILE_LEDGER):>6} "
        f"{sum(r.leaked or 0 for r in HOSTILE_LEDGER):>6} "
        f"{sum(r.server_errors for r in HOSTILE_LEDGER):>4} "
        f"{max(r.api_peak_rss_mb for r in HOSTILE_LEDGER):>9.0f} MiB"
    )


def _print_fault_ledger(terminalreporter: Any) -> None:
    if not LEDGER:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault injection")
    header = (
        f"{'test':64} {'inputs':>6} {'faults':>6} {'jobs ok':>7} {'lost':>4} "
        f"{'dupes':>5} {'5xx':>4} {'added s':>7}"
    )
    write(header)
    for r in LEDGER:
        write(
            f"{r.test[:64]:64} {r.inputs:>6} {len(r.faults):>6} "
            f"{r.jobs_completed:>3}/{r.jobs:<3} {r.files_lost:>4} {r.duplicates:>5} "
            f"{r.server_errors:>4} "
            f"{'-' if r.added_seconds is None else f'{r.added_seconds:.1f}':>7}"
        )
    write(
        f"{'total':64} {sum(r.inputs for r in LEDGER):>6} "
        f"{sum(len(r.faults) for r in LEDGER):>6} "
        f"{sum(r.jobs_completed for r in LEDGER):>3}/{sum(r.jobs for r in LEDGER):<3} "
        f"{sum(r.files_lost for r in LEDGER):>4} {sum(r.duplicates for r in LEDGER):>5} "
        f"{sum(r.server_errors for r in LEDGER):>4}"
    )
