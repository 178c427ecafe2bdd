"""The runner's supervision (infra/run_embedded.py): back-off, crash loop, and what it clears
away before a worker starts again. Tiny real child processes and a fake clock; no Quire."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_embedded", ROOT / "infra/run_embedded.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_embedded = load_runner()

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]
FAILS_AT_ONCE = [sys.executable, "-c", "raise SystemExit(3)"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("QUIRE_DATA_DIR", str(tmp_path / "data"))
    made = run_embedded.Runner(clock=FakeClock())
    yield made
    for child in made.children:
        if child.process is not None and child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def dies(child: Any) -> None:
    """Let ``child``'s current process end by itself, as an unexpected exit."""
    child.process.wait()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_pool_child(main: int) -> int:
    deadline = time.monotonic() + 30  # a bound for a broken test, not a timed assertion
    while time.monotonic() < deadline:
        group = run_embedded.live_processes(lambda pgid, _: pgid == main)
        if others := [pid for pid in group if pid != main]:
            return int(others[0])
        time.sleep(0.05)
    raise AssertionError("the main process started no child")


def test_the_back_off_doubles_up_to_its_cap_and_starts_afresh_after_a_stable_run() -> None:
    child = run_embedded.Supervised("beat", FAILS_AT_ONCE)
    now = 0.0
    delays = []
    for _ in range(8):
        child.start(now)
        dies(child)
        # Each run lives 1 s, and the deaths are spaced wider than the crash-loop window.
        delays.append(child.exited(now + 1))
        now += run_embedded.CRASH_LOOP_WINDOW + 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert run_embedded.MAX_RESTART_DELAY == 10.0
    child.start(now)
    dies(child)
    assert child.exited(now + run_embedded.STABLE_AFTER) == run_embedded.FIRST_RESTART_DELAY


def test_a_sixth_exit_within_the_window_is_a_crash_loop_and_old_restarts_are_forgotten() -> None:
    child = run_embedded.Supervised("api", FAILS_AT_ONCE)
    for second in range(run_embedded.CRASH_LOOP_RESTARTS):
        child.start(float(second))
        dies(child)
        assert child.exited(second + 0.5) is not None
    child.start(5.0)
    dies(child)
    assert child.exited(5.5) is None  # five restarts in the last 60 s already
    # A minute after the first of them, that restart no longer counts: one more is allowed.
    assert child.exited(run_embedded.CRASH_LOOP_WINDOW + 1) is not None


def test_check_restarts_a_killed_process_once_its_back_off_passed(
    runner: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = runner.clock
    first = runner.spawn("worker", SLEEPER)
    assert runner.check(clock.now) is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert runner.check(clock.now) is None
    out = capsys.readouterr().out
    assert (
        "quire: worker exited unexpectedly (code -9); restarting in 0.5 s "
        "(restart 1 in the last 60 s)"
    ) in out
    clock.now += 0.4
    runner.check(clock.now)
    (child,) = runner.children
    assert child.process is first  # still waiting out its back-off
    clock.now += 0.1
    runner.check(clock.now)
    assert child.process is not first
    assert child.process.poll() is None
    assert child.process.args == SLEEPER  # the same command again


def test_check_names_the_process_that_crash_loops(
    runner: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = runner.clock
    runner.spawn("redis", SLEEPER)
    runner.spawn("beat", FAILS_AT_ONCE)
    beat = runner.children[1]
    restarts = 0
    while (looped := runner.check(clock.now)) is None:
        assert beat.process is not None
        if beat.restart_at is None:
            dies(beat)
        else:
            clock.now = beat.restart_at
            restarts += 1
    assert looped is beat
    assert restarts == run_embedded.CRASH_LOOP_RESTARTS
    assert runner.children[0].process.poll() is None  # the others were left running
    out = capsys.readouterr().out
    assert "restart 5 in the last 60 s" in out
    assert "beat exited unexpectedly (code 3) after 5 restarts in the last 60 s" in out
    assert "beat is crash-looping; stopping everything" in out


def test_a_crash_loop_stops_everything_with_exit_code_1(
    runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # supervise() would take over this test process's Ctrl-C; the signals are not under test.
    monkeypatch.setattr(run_embedded.signal, "signal", lambda *_: None)

    clock = runner.clock

    def every_call_a_second_later() -> float:
        clock.now += 1
        return float(clock.now)

    runner.spawn("redis", SLEEPER)
    runner.spawn("api", FAILS_AT_ONCE)
    survivor = runner.children[0].process
    monkeypatch.setattr(runner, "clock", every_call_a_second_later)
    assert runner.supervise() == 1
    assert survivor.poll() is not None  # stopped, not left behind


def test_a_dead_workers_group_and_its_libreoffice_are_ended_before_it_starts_again(
    runner: Any, tmp_path: Path
) -> None:
    clock = runner.clock
    # A main process with a pool child in its group, as Celery's prefork worker has.
    main = runner.spawn(
        "worker",
        [
            sys.executable,
            "-c",
            "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)",
        ],
        before_restart=runner.clean_up_after_worker,
    )
    # LibreOffice runs in a session of its own, with its profile under the profiles folder.
    soffice = subprocess.Popen(
        [*SLEEPER, "soffice.bin", f"-env:UserInstallation=file://{runner.profiles_dir}/lo-1"],
        start_new_session=True,
    )
    pool_child = wait_for_pool_child(main.pid)
    os.kill(main.pid, signal.SIGKILL)  # the OOM killer's way
    main.wait()
    assert alive(pool_child)  # the orphan is still there: this is what must be cleared
    runner.check(clock.now)
    clock.now += run_embedded.FIRST_RESTART_DELAY
    runner.check(clock.now)
    assert runner.children[0].process is not main
    assert not alive(pool_child)
    assert soffice.wait() == -signal.SIGKILL


def ignoring_sigterm(ready: Path) -> list[str]:
    """A process that, like Celery beat when the signal lands while it publishes a sweep,
    lives on after its SIGTERM; ``ready`` appears once it ignores the signal."""
    return [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(300)",
        str(ready),
    ]


def test_a_beat_that_lost_its_sigterm_is_killed_and_the_stop_goes_on(
    runner: Any, tmp_path: Path
) -> None:
    runner.stop_grace = 300.0  # a worker's, for its running conversions: not beat's to wait
    ready = tmp_path / "ignoring"
    beat = runner.spawn("beat", ignoring_sigterm(ready))
    worker = runner.spawn("worker", SLEEPER)
    deadline = time.monotonic() + 30  # a bound for a broken test, not a timed assertion
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    waited: list[float | None] = []
    wait = beat.wait

    def recording_wait(timeout: float | None = None) -> int:
        waited.append(timeout)
        return wait(timeout=timeout)

    beat.wait = recording_wait  # type: ignore[method-assign]
    runner.stop()
    assert waited[0] == run_embedded.STOP_GRACE["beat"] < runner.stop_grace
    assert beat.poll() == -signal.SIGKILL
    assert worker.poll() == -signal.SIGTERM  # stopped after beat, in order
