"""The periodic sweeper: re-sends work whose message was lost or whose worker died.

Every task is idempotent, so re-sending is always safe; at worst a file is converted twice and
recorded once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from app import queue, transitions
from app.config import Settings
from app.db import session_scope
from workers.archive import start_archive_if_done

log = logging.getLogger("quire.sweeper")


def sweep(settings: Settings, *, resume_in_progress: bool = False) -> dict[str, int]:
    """One pass; ``resume_in_progress`` also takes IN_PROGRESS files of any age, which is right
    only when no worker can be running (the embedded runner's start)."""
    stale = timedelta(seconds=settings.stale_after)
    with session_scope() as session:
        pending_jobs = transitions.stale_pending_jobs(session, stale)
        files = transitions.stale_files(session, stale, include_in_progress=resume_in_progress)
        lost_archives = transitions.stale_archives(session, stale)
        ready_jobs = transitions.jobs_ready_for_archive(session)
        # Touching restarts their clocks, so one lost message is re-sent once per period.
        transitions.touch_files(session, [file_id for file_id, _, _ in files])
        for job_id in pending_jobs + lost_archives:
            transitions.touch_job(session, job_id)
    # A file whose input was never written needs its job's ingest, not a conversion.
    reingest = sorted({job_id for _, job_id, ingested in files if not ingested} | set(pending_jobs))
    reconvert = [file_id for file_id, _, ingested in files if ingested]
    for job_id in reingest:
        queue.send_ingest(job_id)
    queue.send_conversions(reconvert)
    for job_id in lost_archives:
        queue.send_archive(job_id)
    started = sum(start_archive_if_done(job_id) for job_id in ready_jobs)
    summary = {
        "ingests": len(reingest),
        "conversions": len(reconvert),
        "archives": len(lost_archives) + started,
    }
    if any(summary.values()):
        log.info("sweep.resent %s", " ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
