"""The periodic sweeper: re-sends work whose message was lost or whose worker died.

Every task is idempotent, so re-sending is always safe; at worst a file is converted twice and
recorded once. Still, it re-sends only what is really lost: a PENDING file may simply be
waiting behind a long queue, so those are re-sent only when the conversion queue is empty.

A dead worker's files, ingests and archives are found by their leases (``workers.leases``): a
lease that ran out means the worker holding the file's or the job's message stopped renewing
it. A message the worker had received but not leased yet is found in the broker's
unacknowledged set. A message lost before any worker held it (Redis emptied or restarted, a
worker killed between the commit and the send, or between taking it off the list and recording
it as unacknowledged) is found by reading the broker's lists, which stay short: a file the
scheduler marked in flight, or a job no ingest has started, whose message is nowhere is sent
again a lease after it was first sent. Untouched for QUIRE_STALE_AFTER stays the last resort,
for what none of these finds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from app import queue, scheduling, transitions, webhooks
from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
from app.models import utcnow
from app.storage import ObjectStore, job_prefixes
from workers.archive import queue_archive_after_commit, start_archive_if_done

log = get_logger("quire.sweeper")


def expire_uploads(settings: Settings, store: ObjectStore) -> int:
    """Remove direct uploads that never became a job, one URL lifetime after they expired (a
    PUT that started just before the expiry may still be finishing).

    The row is taken first, by a conditional DELETE, and the object removed before that
    transaction commits: an upload made a job after it was listed keeps its object (the job
    took the row), and a failed removal rolls back to be tried again on the next pass."""
    grace = timedelta(seconds=settings.presigned_url_ttl)
    with session_scope() as session:
        unused = transitions.expired_uploads(session, grace)
    removed = 0
    for upload_id in unused:
        try:
            with session_scope() as session:
                if not transitions.delete_upload(session, upload_id, utcnow() - grace):
                    continue  # made a job meanwhile: its object is the job's upload now
                store.delete_prefix(job_prefixes(upload_id)[0])
        except Exception:
            log.exception("upload.expire_failed", upload_id=upload_id)
            continue
        removed += 1
    return removed


def expire(
    settings: Settings, store: ObjectStore, still_mine: Callable[[], bool] = lambda: True
) -> int:
    """Remove the objects, then the rows, of jobs finished more than QUIRE_JOB_TTL ago.

    Objects first: if this stops half-way, the rows are still there and the next sweep
    finishes the job; the other order could leave objects nothing refers to.
    """
    with session_scope() as session:
        expired = transitions.expired_jobs(session, timedelta(seconds=settings.job_ttl))
    removed = 0
    for job_id in expired:
        if not still_mine():
            break  # the sweep lock was lost: another sweep is running, it takes the rest
        try:
            for prefix in job_prefixes(job_id):
                store.delete_prefix(prefix)
            with session_scope() as session:
                transitions.delete_job(session, job_id)
        except Exception:
            log.exception("job.expire_failed", job_id=job_id)
            continue
        removed += 1
        log.info("job.expired", job_id=job_id)
    return removed


def resend_webhooks() -> int:
    """Send every webhook delivery that is due: its first message or its retry was lost, its
    worker died mid-attempt (the lease ran out), or the service restarted. This is what makes
    callbacks survive restarts: the due time is in the database, not in a queue."""
    with session_scope() as session:
        due = webhooks.due_deliveries(session, utcnow())
        queue.queue_after_commit(session, queue.WEBHOOK_TASK, *due)
    if due:
        log.info("sweep.resent", webhooks=len(due))
    return len(due)


def _held_by_dead_consumers(settings: Settings) -> list[tuple[str, str]]:
    """(task, id) of the conversion, ingest and archive messages delivered more than a lease
    ago and not acknowledged. A live worker leases what it holds well within that, so those
    without a live lease were held by a consumer that died before its first renewal."""
    try:
        return sorted(set(queue.unacked_tasks(time.time() - settings.lease_seconds)))
    except Exception as error:  # noqa: BLE001 - the broker may be away; the leases still work
        log.warning("sweep.unacked_unreadable", error=str(error))
        return []


@dataclass(frozen=True)
class LeaseResends:
    """What one lease sweep re-sent: files to convert, and jobs to ingest or to archive."""

    files: list[str]
    jobs: transitions.JobResends


def resend_unleased(settings: Settings) -> LeaseResends:
    """Re-send what a dead worker held: the files and jobs whose lease ran out, or whose message
    sits unacknowledged with no live lease. Each gets one more lease period, so it is re-sent
    once per period until a worker holds it (and leases it) again.

    A job gets the task it still needs: its ingest while files are left to copy (or it never
    started), its archive once claimed and until the job COMPLETED; both are idempotent, and a
    late archive is fenced by its round (``archive_enqueued_at``). The new ingest copies only
    what is not copied yet. (The files it had
    copied wait for the scheduler; any it had marked in flight and not sent are found by
    ``resend_lost_dispatches``.)"""
    held_by_dead = _held_by_dead_consumers(settings)
    now = utcnow()
    until = now + timedelta(seconds=settings.lease_seconds)

    def held(task: str) -> list[str]:
        return [one for name, one in held_by_dead if name == task]

    with session_scope() as session:
        expired = transitions.expired_leases(session, now)
        orphaned = sorted(
            set(transitions.unleased(session, held(queue.CONVERT_TASK), now)) - set(expired)
        )
        files = expired + orphaned
        transitions.renew_leases(session, files, until)

        expired_jobs = transitions.expired_job_leases(session, now)
        unacked_jobs = transitions.unleased_jobs(
            session, held(queue.INGEST_TASK), held(queue.ARCHIVE_TASK), now
        )
        ingest = sorted(set(expired_jobs.ingest) | set(unacked_jobs.ingest))
        archive = sorted(set(expired_jobs.archive) | set(unacked_jobs.archive))
        jobs = transitions.JobResends(ingest=ingest, archive=archive)
        transitions.renew_job_leases(session, jobs.job_ids, until)
        queue.queue_after_commit(session, queue.CONVERT_TASK, *files, handover=True)
        queue.queue_after_commit(session, queue.INGEST_TASK, *ingest)
        for job_id in archive:
            queue_archive_after_commit(session, job_id)
    if files or jobs:
        log.info(
            "sweep.lease_expired",
            files=len(expired),
            unacked=len(orphaned),
            jobs=len(jobs.job_ids),
            ingests=len(ingest),
            archives=len(archive),
        )
    return LeaseResends(files, jobs)


def _read_broker(read: Callable[[], set[str]]) -> set[str] | None:
    """The ids of the messages the broker holds, as ``read`` finds them; None when the broker
    cannot be read (then nothing could be sent either: the next sweep looks again)."""
    try:
        return read()
    except Exception as error:  # noqa: BLE001 - any failure to read means "cannot tell"
        log.warning("sweep.queue_unreadable", error=str(error))
        return None


def resend_lost_dispatches(settings: Settings, *, any_age: bool = False) -> list[str]:
    """Send again the conversions the scheduler marked in flight whose message is gone: Redis
    restarted or was emptied, or a worker died between the commit that chose the file and the
    send. Such a file is PENDING with ``dispatched_at`` set, no worker leases it, and neither
    the broker's lists nor its unacknowledged set hold its message. Only files sent more than a
    lease ago are looked at (``any_age``: every one, when no worker can be running), so a
    message still on its way to the lists is not taken for lost.

    A message in flight between the list and its worker's unacknowledged set is in neither for
    an instant; were it read then, the file is sent twice, converted twice at worst, and
    recorded once (a claim fences the earlier one)."""
    now = utcnow()
    sent_before = now if any_age else now - timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        suspects = transitions.dispatched_unleased(session, sent_before, now)
    if not suspects:
        return []
    in_broker = _read_broker(
        lambda: queue.queued_conversion_ids() | set(queue.unacked_conversions(time.time() + 1))
    )
    if in_broker is None:
        return []
    lost = [file_id for file_id in suspects if file_id not in in_broker]
    with session_scope() as session:
        # Marked again: the next look at them is a lease from now, after this send landed.
        lost = transitions.redispatch(session, lost, sent_before, now)
        queue.queue_after_commit(session, queue.CONVERT_TASK, *lost, handover=True)
    if lost:
        log.info("sweep.dispatch_lost", files=len(lost))
    return lost


def resend_lost_ingests(settings: Settings, *, any_age: bool = False) -> list[str]:
    """Send again the ingest of a job submitted more than a lease ago that no ingest has started,
    that no worker leases, and whose message is in no control-queue list and not unacknowledged:
    it was lost before any worker leased it (Redis emptied or restarted, or a worker killed
    between taking the message off the list and recording it as unacknowledged). Without this,
    only ``QUIRE_STALE_AFTER`` would find it. The job gets a lease with the send: should the new
    message be lost too, the lease sweep sends it again when the lease runs out."""
    now = utcnow()
    submitted_before = now if any_age else now - timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        suspects = transitions.unstarted_unleased_jobs(session, submitted_before, now)
    if not suspects:
        return []
    in_broker = _read_broker(
        lambda: queue.queued_ingest_ids() | {one for _, one in queue.unacked_tasks(time.time() + 1)}
    )
    if in_broker is None:
        return []
    lost = [job_id for job_id in suspects if job_id not in in_broker]
    with session_scope() as session:
        transitions.renew_job_leases(session, lost, now + timedelta(seconds=settings.lease_seconds))
        queue.queue_after_commit(session, queue.INGEST_TASK, *lost)
    if lost:
        log.info("sweep.ingest_lost", jobs=len(lost))
    return lost


def top_up(settings: Settings) -> int:
    """Fill the scheduler's window: a safety net under the top-ups that follow each finished
    file, for room they could not see (a worker that died, a window that widened)."""
    with session_scope() as session:
        return len(scheduling.dispatch(session, settings))


def sweep(settings: Settings, *, resume_in_progress: bool = False) -> dict[str, int]:
    """One pass; ``resume_in_progress`` also takes IN_PROGRESS files of any age, which is right
    only when no worker can be running (the embedded runner calls it before starting any)."""
    stale = timedelta(seconds=settings.stale_after)
    resent = resend_unleased(settings)
    leased_again = set(resent.files) | set(
        resend_lost_dispatches(settings, any_age=resume_in_progress)
    )
    ingested_again = set(resent.jobs.ingest) | set(
        resend_lost_ingests(settings, any_age=resume_in_progress)
    )
    waiting = queue.queued_conversions()
    with session_scope() as session:
        pending_jobs = transitions.stale_pending_jobs(session, stale)
        files = [
            file
            for file in transitions.stale_files(
                session, stale, include_in_progress=resume_in_progress
            )
            # A claimed file went stale because its worker died. An unclaimed one may just be
            # queued: lost for sure only when nothing waits in the queue. One never ingested is
            # lost only when its job's ingest stopped making progress. One a live worker holds
            # (its lease runs) is not lost, however long it has taken.
            if file.file_id not in leased_again
            and (resume_in_progress or not file.leased)
            and (
                file.in_progress
                or (file.ingested and waiting == 0)
                or (not file.ingested and file.job_idle)
            )
        ]
        # A job the lease sweep just re-sent is not sent a second time for being stale too.
        lost_archives = [
            job_id
            for job_id in transitions.stale_archives(session, stale)
            if job_id not in resent.jobs.archive
        ]
        ready_jobs = transitions.jobs_ready_for_archive(session)
        # Touching restarts their clocks, so one lost message is re-sent once per period.
        transitions.touch_files(session, [file.file_id for file in files])
        for job_id in pending_jobs + lost_archives:
            transitions.touch_job(session, job_id)
        # A file whose input was never written needs its job's ingest, not a conversion.
        reingest = sorted(
            ({file.job_id for file in files if not file.ingested} | set(pending_jobs))
            - ingested_again
        )
        reconvert = [file.file_id for file in files if file.ingested]
        queue.queue_after_commit(session, queue.INGEST_TASK, *reingest)
        queue.queue_after_commit(session, queue.CONVERT_TASK, *reconvert, handover=True)
        for job_id in lost_archives:
            queue_archive_after_commit(session, job_id)
    started = sum(start_archive_if_done(job_id) for job_id in ready_jobs)
    dispatched = top_up(settings)
    resend_webhooks()
    ingests, conversions, archives = len(reingest), len(reconvert), len(lost_archives) + started
    if ingests or conversions or archives:
        log.info("sweep.resent", ingests=ingests, conversions=conversions, archives=archives)
    # The files re-sent for their lease are logged above (sweep.lease_expired), not counted here.
    return {
        "ingests": ingests,
        "conversions": conversions,
        "archives": archives,
        "dispatched": dispatched,
    }


SWEEP_LOCK = "sweep"


class SweepLock:
    """The database lock one sweep holds while it runs, so two never run at once (beat
    restarted, two beats). It expires after QUIRE_LEASE_SECONDS unless renewed, so a sweep
    killed half-way holds up the next one by at most that; a long sweep renews it as it goes,
    and stops when it finds the lock taken by another."""

    def __init__(self, settings: Settings, name: str = SWEEP_LOCK) -> None:
        self.name = name
        self.holder = str(uuid.uuid4())
        self.hold_for = timedelta(seconds=settings.lease_seconds)

    def take(self) -> bool:
        """Take it, or renew it while still held: False when another sweep holds it."""
        with session_scope() as session:
            return transitions.take_lock(session, self.name, self.holder, utcnow() + self.hold_for)

    def release(self) -> None:
        with session_scope() as session:
            transitions.release_lock(session, self.name, self.holder)
