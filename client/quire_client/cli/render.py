"""What the CLI shows: progress bars on a terminal, plain lines otherwise, and result tables.

Progress goes to stderr and results (summary, failure table, status) to stdout, so
``quire convert ... > report.txt`` keeps the report and still shows progress. When stderr is
not a terminal (CI logs, pipes), bars would print escape codes or nothing at all: a line every
few seconds says the same in plain text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from quire_client.models import JobSummary

PLAIN_EVERY = 5.0  # seconds between two plain progress lines


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_seconds(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def counts_text(progress: dict[str, Any]) -> str:
    done = progress.get("completed", 0)
    failed = progress.get("failed", 0)
    total = progress.get("total", 0)
    text = f"{done + failed}/{total} files: {done} done, {failed} failed"
    cancelled = progress.get("cancelled", 0)
    return text + (f", {cancelled} cancelled" if cancelled else "")


def fonts_text(job: dict[str, Any]) -> str:
    """The job's font counts (README, "Fonts"); empty when no file had a font replaced or
    missing, or the server reports none."""
    fonts = job.get("fonts") or {}
    substituted = fonts.get("files_with_substitutions", 0)
    missing = fonts.get("files_with_missing_fonts", 0)
    if not substituted and not missing:
        return ""
    return (
        f"fonts: {substituted} files with substituted fonts, {missing} with missing fonts "
        f"(quire status {job.get('job_id', '<job>')} --json shows each file's)"
    )


def finished(progress: dict[str, Any]) -> int:
    return int(sum(progress.get(key, 0) for key in ("completed", "failed", "cancelled")))


class _FilesRate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} files/s", style="progress.data.speed")


class Display:
    """Progress on a terminal: rich bars, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream)

    def note(self, message: str) -> None:
        # markup=False: notes hold paths and server messages, whose "[...]" is text, not style.
        self.console.print(message, highlight=False, markup=False)

    @contextmanager
    def transfer(self, verb: str, total: int | None) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console) as bars:
            task = bars.add_task(verb, total=total)
            yield lambda count: bars.advance(task, count)

    @contextmanager
    def conversion(self, total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[counts]}"),
            _FilesRate(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console) as bars:
            task = bars.add_task("Converting", total=total, counts="")

            def update(progress: dict[str, Any]) -> None:
                bars.update(
                    task,
                    total=progress.get("total") or total,
                    completed=finished(progress),
                    counts=counts_text(progress),
                )

            yield update


class PlainDisplay(Display):
    """Progress for a log or a pipe: a plain line at the start, every few seconds and at the end."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.stream = stream

    def note(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    @contextmanager
    def transfer(self, verb: str, total: int | None) -> Iterator[Callable[[int], None]]:
        size = f" {human_bytes(total)}" if total is not None else ""
        self.note(f"{verb}{size}")
        started, moved = time.monotonic(), 0

        def advance(count: int) -> None:
            nonlocal moved
            moved += count

        yield advance
        elapsed = max(time.monotonic() - started, 1e-6)
        past = {"Uploading": "Uploaded", "Downloading": "Downloaded"}.get(verb, verb)
        self.note(
            f"{past} {human_bytes(moved)} in {elapsed:.1f}s ({human_bytes(moved / elapsed)}/s)"
        )

    @contextmanager
    def conversion(self, total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
        started = time.monotonic()
        last: dict[str, Any] = {"total": total}
        printed = {"at": 0.0, "finished": -1}

        def line(progress: dict[str, Any]) -> str:
            elapsed = time.monotonic() - started
            done, count = finished(progress), progress.get("total") or total
            text = f"Converting: {counts_text(progress)}"
            if done and elapsed > 0:
                rate = done / elapsed
                text += f" ({rate:.1f} files/s"
                text += f", ETA {human_seconds((count - done) / rate)})" if done < count else ")"
            return text

        def update(progress: dict[str, Any]) -> None:
            last.update(progress)
            now = time.monotonic()
            if finished(progress) != printed["finished"] and now - printed["at"] >= PLAIN_EVERY:
                printed.update(at=now, finished=finished(progress))
                self.note(line(progress))

        yield update
        if finished(last) != printed["finished"]:
            self.note(line(last))


# Streams default to None, read as sys.stdout/sys.stderr at call time (print and rich do so
# for None): a default of sys.stdout would be bound at import, before a caller (pytest's
# capture, a redirect) replaces it.


def display_for(stream: TextIO | None = None) -> Display:
    stream = sys.stderr if stream is None else stream
    return Display(stream) if Console(file=stream).is_terminal else PlainDisplay(stream)


# -- results -----------------------------------------------------------------------------------


def failed_files(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (file["filename"], file.get("error_message") or "")
        for file in job.get("files", [])
        if file.get("status") == "FAILED"
    ]


def print_failures(job: dict[str, Any], stream: TextIO | None = None) -> None:
    """The failed files and why, as a table; nothing when none failed."""
    failures = failed_files(job)
    if not failures:
        return
    total = job.get("progress", {}).get("total", len(job.get("files", [])))
    title = f"{len(failures)} of {total} files failed"
    console = Console(file=stream)
    if console.is_terminal:
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("File", overflow="fold")
        table.add_column("Error", overflow="fold")
        for name, message in failures:
            # Text, not str: a cell string is read as markup, and these come from the upload.
            table.add_row(Text(name), Text(message))
        console.print(table)
        return
    # One line per file, messages never wrapped: easy to read in a log and to grep.
    width = max(len("FILE"), *(len(name) for name, _ in failures))
    print(f"{title}:", file=stream)
    print(f"  {'FILE':<{width}}  ERROR", file=stream)
    for name, message in failures:
        print(f"  {name:<{width}}  {message}", file=stream)


def print_status(job: dict[str, Any], stream: TextIO | None = None) -> None:
    print(f"Job {job['job_id']}: {job['status']}", file=stream)
    print(f"  {counts_text(job.get('progress', {}))}", file=stream)
    progress = job.get("progress", {})
    waiting = progress.get("pending", 0) + progress.get("in_progress", 0)
    if waiting:
        print(f"  {waiting} not finished yet", file=stream)
    if job.get("error_message"):
        print(f"  error: {job['error_message']}", file=stream)
    fonts = fonts_text(job)
    if fonts:
        print(f"  {fonts}", file=stream)
    if job.get("download_url"):
        size = job.get("result_bytes")
        extra = f" ({human_bytes(size)})" if isinstance(size, int) else ""
        print(f"  archive{extra}: quire download {job['job_id']} -o result.zip", file=stream)
    if job.get("merged_url"):
        size = job.get("merged_bytes")
        extra = f" ({human_bytes(size)})" if isinstance(size, int) else ""
        print(
            f"  merged PDF{extra}: quire download {job['job_id']} --merged -o merged.pdf",
            file=stream,
        )
    print_failures(job, stream)


def print_jobs(jobs: Sequence[JobSummary], stream: TextIO | None = None) -> None:
    """One line per job: id, status, files finished of all, when it was created."""
    if not jobs:
        print("No jobs.", file=stream)
        return
    width = max(len(job.status) for job in jobs)
    for job in jobs:
        created = job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else ""
        counts = f"{job.finished_files}/{job.file_count} files"
        print(f"{job.job_id}  {job.status:<{width}}  {counts:<15}  {created}", file=stream)
