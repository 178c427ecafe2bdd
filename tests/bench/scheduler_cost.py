"""What the fair scheduler costs per file (issue #16, item 3), on SQLite and on PostgreSQL.

    python -m tests.bench.scheduler_cost                                  # both databases
    python -m tests.bench.scheduler_cost --databases sqlite --rounds 6 --files-per-round 100

A worker records each finished file in one transaction (``workers.file_conversion._record``:
complete the file, count it in its job) and, with the scheduler, tops up the window in that same
transaction (``app.scheduling.dispatch``: in flight by job, the jobs with waiting files, the next
file, the mark). This script times that transaction with the top-up and without it, on the same
database, in turns, and reports the difference per file.

The database holds what a busy service's does, its rows made directly: a running job of
``--big-job`` files (key a) and a few others (key b: one of 2,000 files; key c: two of 1,000),
every file copied and waiting, and one live worker of 3 processes, so the window is 6, as on
the embedded default of a 2-core machine. Each file measured is first claimed, off the clock, as
a worker claims it; then its record transaction is timed, commit included. The variant without
the top-up runs the same top-up afterwards in a transaction of its own, off the clock, so both
variants see the same window and the same waiting files: the difference is the top-up alone.

What is left out of both: the broker. The conversion messages are captured instead of sent
(the ``app.queue.send_*`` process boundary); first in, first out sent each file's message once
too, from the ingest, so the send is not the scheduler's cost.

The variants take turns, the order swapped each round, so a drift of the machine weighs on both;
a first round is discarded (warm caches). Per variant and round: wall time per file
(``time.perf_counter``) and this process's CPU time per file (``time.process_time``; on
PostgreSQL the server's work is in its own process, so there the wall time is the figure). The
figures are medians over rounds, and the median of each round's difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATABASES = ("sqlite", "postgresql")
WORKER_SLOTS = 3  # the embedded default's processes on 2 cores: a window of 6


@dataclass(frozen=True)
class Variant:
    """One variant's figures over the measured rounds, per file."""

    wall_ms: list[float]
    cpu_ms: list[float]
    # PostgreSQL's CPU for this script's connections (its backend processes); 0 on SQLite
    server_cpu_ms: list[float]
    statements: float  # SQL statements per record transaction

    def median_wall(self) -> float:
        return statistics.median(self.wall_ms)

    def median_cpu(self) -> float:
        return statistics.median(self.cpu_ms)

    def median_server_cpu(self) -> float:
        return statistics.median(self.server_cpu_ms)


# -- the child: one database, rows made directly, the two variants in turns ----------------------


def _environment(workdir: Path, database_url: str | None) -> None:
    """Settings for a fresh database before anything reads them; the broker is never reached."""
    os.environ.update(
        {
            "QUIRE_DATA_DIR": str(workdir / "data"),
            "QUIRE_SECRET_KEY": "bench",
            "QUIRE_BROKER_URL": "redis://127.0.0.1:1/0",
            "QUIRE_LOG_LEVEL": "WARNING",
            "QUIRE_MIN_FREE_BYTES": "0",
        }
    )
    if database_url:
        os.environ["QUIRE_DATABASE_URL"] = database_url
    from app.migrate import upgrade

    upgrade()


def _make_rows(jobs: dict[str, tuple[str, int]]) -> None:
    """Running jobs (id -> (owner, files)), every file copied and waiting, and a live worker."""
    from sqlalchemy import insert, text

    from app import transitions
    from app.db import session_scope
    from app.models import FileStatus, JobStatus, time_ordered_ids, utcnow

    with session_scope() as session:
        for job_id, (owner, count) in jobs.items():
            session.execute(
                insert(transitions.JOBS).values(
                    id=job_id,
                    status=JobStatus.IN_PROGRESS,
                    file_count=count,
                    finished_files=0,
                    upload_bytes=count * 12_000,
                    owner=owner,
                )
            )
            session.execute(
                insert(transitions.FILES),
                [
                    {
                        "id": file_id,
                        "job_id": job_id,
                        "position": position,
                        "filename": f"doc-{position:05}.docx",
                        "output_name": f"doc-{position:05}.pdf",
                        "status": FileStatus.PENDING,
                        "input_bytes": 12_000,
                    }
                    for position, file_id in enumerate(time_ordered_ids(count))
                ],
            )
        transitions.register_worker(
            session, "bench@host", WORKER_SLOTS, utcnow() + timedelta(days=1)
        )
    with session_scope() as session:
        # As autovacuum would have, on a database that has been running: the planner's figures.
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE"))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServerCpu:
    """The CPU time PostgreSQL's backends spent for this process's connections, read from
    /proc (the cluster runs on this machine). Counted in clock ticks (10 ms): summed over a
    round of files the rounding evens out, one file's figure alone means nothing."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def watch(self) -> None:
        from sqlalchemy import event

        from app.db import get_engine

        engine = get_engine()
        if engine.dialect.name != "postgresql":
            return

        def connected(connection: Any, _record: Any) -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pids.add(int(cursor.fetchone()[0]))

        event.listen(engine, "connect", connected)

    def seconds(self) -> float:
        return sum(_process_cpu_seconds(pid) for pid in self.pids)


@contextmanager
def _counting_statements() -> Iterator[list[int]]:
    from sqlalchemy import event

    from app.db import get_engine

    count = [0]

    def counted(*_: Any) -> None:
        count[0] += 1

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", counted)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", counted)


def _measure(big_job: int, files_per_round: int, rounds: int, alone: bool) -> dict[str, Any]:
    from app import queue, scheduling, transitions
    from app.db import session_scope
    from app.models import FileStatus, JobStatus

    # The messages the top-ups send, in the order sent: what the workers would receive next.
    sent: list[str] = []

    def capture(file_ids: Iterable[str], priority: int = queue.NORMAL_PRIORITY) -> None:
        sent.extend(file_ids)

    queue.send_conversions = capture
    server = ServerCpu()
    server.watch()  # before the first connection
    # Alone: the big job is the only one with files waiting, as in make bench's main run.
    others = {
        "job-key-b": ("key-b", 2_000),
        "job-1-key-c": ("key-c", 1_000),
        "job-2-key-c": ("key-c", 1_000),
    }
    _make_rows({"big-job-key-a": ("key-a", big_job), **({} if alone else others)})
    with session_scope() as session:
        scheduling.dispatch(session)
    # Sent once the top-up's transaction committed.
    assert len(sent) == 2 * WORKER_SLOTS, f"the window is full: {len(sent)} sent"
    with session_scope() as session:
        job_of = dict(
            session.execute(
                transitions.FILES.select()
                .with_only_columns(transitions.FILES.c.id, transitions.FILES.c.job_id)
                .where(transitions.FILES.c.status == FileStatus.PENDING)
            ).all()
        )

    def one_file(with_dispatch: bool, statements: list[int]) -> list[float]:
        """Claim the oldest message's file (off the clock), then time its record: its wall
        seconds, CPU seconds here and in the server, and statements."""
        file_id = sent.pop(0)
        with session_scope() as session:
            token = transitions.claim_file(session, file_id)
        assert token is not None
        before, server_before = statements[0], server.seconds()
        wall, cpu = time.perf_counter(), time.process_time()
        with session_scope() as session:
            assert transitions.complete_file(
                session, file_id, output_bytes=40_000, crc32=0, token=token
            )
            transitions.record_finished(session, job_of[file_id], 1)
            if with_dispatch:
                scheduling.dispatch(session)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        measured = [wall, cpu, server.seconds() - server_before, statements[0] - before]
        if not with_dispatch:
            with session_scope() as session:
                scheduling.dispatch(session)  # the same window for the next file, off the clock
        return measured

    names = ("wall", "cpu", "server_cpu", "statements")
    figures: dict[bool, dict[str, list[float]]] = {
        variant: {name: [] for name in names} for variant in (True, False)
    }
    with _counting_statements() as statements:
        for round_index in range(rounds + 1):
            order = (True, False) if round_index % 2 else (False, True)
            for with_dispatch in order:
                results = [one_file(with_dispatch, statements) for _ in range(files_per_round)]
                if round_index == 0:
                    continue  # warm-up
                for index, name in enumerate(names):
                    # Per file; the times in ms.
                    scale = 1 if name == "statements" else 1000
                    total = sum(result[index] for result in results)
                    figures[with_dispatch][name].append(scale * total / files_per_round)
    with session_scope() as session:
        in_flight = scheduling.in_flight(session)
        running = session.execute(
            transitions.JOBS.select()
            .with_only_columns(transitions.JOBS.c.owner, transitions.JOBS.c.finished_files)
            .where(transitions.JOBS.c.status == JobStatus.IN_PROGRESS)
        ).all()
    finished_by_key: dict[str, int] = {}
    for owner, finished in running:
        finished_by_key[owner] = finished_by_key.get(owner, 0) + finished
    variants = {
        name: Variant(
            wall_ms=figures[flag]["wall"],
            cpu_ms=figures[flag]["cpu"],
            server_cpu_ms=figures[flag]["server_cpu"],
            statements=statistics.median(figures[flag]["statements"]),
        )
        for name, flag in (("with_dispatch", True), ("without_dispatch", False))
    }
    return {
        "variants": {name: asdict(variant) for name, variant in variants.items()},
        # The scheduler at work while measured: the window stayed full, and the keys shared it.
        "in_flight_at_end": sum(one.count for one in in_flight),
        "finished_by_key": finished_by_key,
    }


@dataclass(frozen=True)
class Sizes:
    big_job: int  # files of key a's running job
    files_per_round: int  # files recorded per variant and round
    rounds: int  # measured rounds, after one discarded
    alone: bool = False  # the big job without the other keys' jobs beside it

    def arguments(self) -> list[str]:
        return [
            f"--big-job={self.big_job}",
            f"--files-per-round={self.files_per_round}",
            f"--rounds={self.rounds}",
            *(["--alone"] if self.alone else []),
        ]


def _child(database: str, database_url: str | None, sizes: Sizes) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="quire-scheduler-cost-"))
    try:
        _environment(workdir, database_url)
        result = _measure(sizes.big_job, sizes.files_per_round, sizes.rounds, sizes.alone)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"database": database, "sizes": asdict(sizes), **result}))


# -- the parent: one fresh interpreter per database, then the report -----------------------------


def _run_child(database: str, database_url: str | None, sizes: Sizes) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.bench.scheduler_cost", "--child", database]
    command += sizes.arguments()
    if database_url:
        command += ["--database-url", database_url]
    done = subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds of each variant, and of each round's difference (with - without)."""
    with_, without = (
        Variant(**result["variants"]["with_dispatch"]),
        Variant(**result["variants"]["without_dispatch"]),
    )
    return {
        "database": result["database"],
        "sizes": result["sizes"],
        "wall_ms_per_file": {"with": with_.median_wall(), "without": without.median_wall()},
        "wall_ms_added_per_file": statistics.median(
            a - b for a, b in zip(with_.wall_ms, without.wall_ms, strict=True)
        ),
        "wall_ms_added_range": [
            min(a - b for a, b in zip(with_.wall_ms, without.wall_ms, strict=True)),
            max(a - b for a, b in zip(with_.wall_ms, without.wall_ms, strict=True)),
        ],
        "cpu_ms_per_file": {"with": with_.median_cpu(), "without": without.median_cpu()},
        "cpu_ms_added_per_file": statistics.median(
            a - b for a, b in zip(with_.cpu_ms, without.cpu_ms, strict=True)
        ),
        "server_cpu_ms_per_file": {
            "with": with_.median_server_cpu(),
            "without": without.median_server_cpu(),
        },
        "server_cpu_ms_added_per_file": statistics.median(
            a - b for a, b in zip(with_.server_cpu_ms, without.server_cpu_ms, strict=True)
        ),
        "statements_per_file": {"with": with_.statements, "without": without.statements},
        "in_flight_at_end": result["in_flight_at_end"],
        "finished_by_key": result["finished_by_key"],
    }


def render(summary: dict[str, Any]) -> list[str]:
    wall, cpu, statements = (
        summary["wall_ms_per_file"],
        summary["cpu_ms_per_file"],
        summary["statements_per_file"],
    )
    low, high = summary["wall_ms_added_range"]
    server = summary["server_cpu_ms_per_file"]
    server_line = (
        [
            f"  PostgreSQL's CPU: {server['without']:.3f} ms, {server['with']:.3f} ms; "
            f"added {summary['server_cpu_ms_added_per_file']:+.3f} ms"
        ]
        if summary["database"] == "postgresql"
        else []
    )
    return [
        f"{summary['database']}: the record transaction per file, beside a running job of "
        f"{summary['sizes']['big_job']} files; median of {summary['sizes']['rounds']} rounds "
        f"of {summary['sizes']['files_per_round']} files per variant",
        f"  wall: {wall['without']:.3f} ms without the top-up, {wall['with']:.3f} ms with it; "
        f"added {summary['wall_ms_added_per_file']:+.3f} ms per file "
        f"(rounds: {low:+.3f} to {high:+.3f})",
        f"  this process's CPU: {cpu['without']:.3f} ms, {cpu['with']:.3f} ms; "
        f"added {summary['cpu_ms_added_per_file']:+.3f} ms",
        *server_line,
        f"  statements per record: {statements['without']:.0f} without, "
        f"{statements['with']:.0f} with; window at the end {summary['in_flight_at_end']} "
        f"in flight; files finished by key {summary['finished_by_key']}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default=",".join(DATABASES), help="comma-separated")
    parser.add_argument("--big-job", type=int, default=10_000, help="files of the running job")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds per variant")
    parser.add_argument(
        "--files-per-round", type=int, default=150, help="files per variant and round"
    )
    parser.add_argument(
        "--alone", action="store_true", help="the big job alone, without other keys' jobs"
    )
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--child", choices=DATABASES, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = Sizes(args.big_job, args.files_per_round, args.rounds, args.alone)
    if args.child:
        _child(args.child, args.database_url, sizes)
        return 0

    summaries = []
    for database in (name.strip() for name in args.databases.split(",") if name.strip()):
        if database == "postgresql":
            from tests.services import postgres_server

            with postgres_server() as postgres:
                result = _run_child(database, postgres.url, sizes)
        else:
            result = _run_child(database, None, sizes)
        summaries.append(summarise(result))
        print("\n".join(render(summaries[-1])), flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
