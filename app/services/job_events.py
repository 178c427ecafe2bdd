"""What changed in a job since a stream last looked: the events of ``GET .../events``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.db import session_scope
from app.jobs import files_touched_since, status_counts
from app.models import TERMINAL_FILE_STATUSES, TERMINAL_JOB_STATUSES, FileStatus, Job
from app.status import archive_url, font_counts

# touched_at is stamped when a worker's transaction starts, not when it commits, so a change may
# become visible with a stamp a little older than one already read: read back this far again
# (repeats are filtered out by what was already sent).
OVERLAP = timedelta(seconds=60)

Event = tuple[str, dict[str, Any]]  # its name ("file", "progress", "job", "error"), its data


def _progress(counts: dict[FileStatus, int]) -> dict[str, Any]:
    total = sum(counts.values())
    finished = sum(counts.get(status, 0) for status in TERMINAL_FILE_STATUSES)
    return {
        "total": total,
        **{status.value.lower(): counts.get(status, 0) for status in FileStatus},
        "percent": round(100 * finished / total, 1) if total else 100.0,
    }


class JobWatch:
    """What one stream has told its client so far, and the reading of what changed."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.since: datetime | None = None
        self.sent: dict[str, FileStatus] = {}
        self.progress: dict[str, Any] | None = None

    def read(self, base: str) -> tuple[list[Event], bool]:
        """The events due now, and whether the job has ended (or is gone)."""
        events: list[Event] = []
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return [("error", {"message": "The job no longer exists."})], True
            ended = job.status in TERMINAL_JOB_STATUSES
            # The last reading before the end reads every file, so none can be missed.
            since = None if ended or self.since is None else self.since - OVERLAP
            reports: list[dict[str, Any] | None] = []
            for file_id, filename, status, error, touched, fonts in files_touched_since(
                session, self.job_id, since
            ):
                self.since = touched  # ordered by touched_at: the last row is the newest
                reports.append(fonts)
                if self.sent.get(file_id, FileStatus.PENDING) != status:
                    self.sent[file_id] = status
                    file: dict[str, Any] = {
                        "file_id": file_id,
                        "filename": filename,
                        "status": status.value,
                        "error_message": error,
                    }
                    if status == FileStatus.COMPLETED:
                        file["fonts"] = fonts
                    events.append(("file", file))
            progress = _progress(status_counts(session, self.job_id))
            if progress != self.progress:
                self.progress = progress
                events.append(("progress", progress))
            if ended:
                download = archive_url(base, job)
                events.append(
                    (
                        "job",
                        {
                            "job_id": job.id,
                            "status": job.status.value,
                            "download_url": download,
                            "error_message": job.error_message,
                            "progress": progress,
                            # The last reading reads every file: the whole job's counts.
                            "fonts": font_counts(reports).model_dump(),
                        },
                    )
                )
                return events, True
        return events, False
