"""The result zip: started once per job by an atomic transition, streamed into the store.

PDFs are stored, not recompressed (they are compressed already), and their size and CRC-32
were recorded at conversion, so stream-zip needs no buffering: memory stays flat whatever the
archive's size.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from stream_zip import NO_COMPRESSION_32, NO_COMPRESSION_64, stream_zip

from app import queue, tracing, transitions, webhooks
from app.config import get_settings
from app.db import session_scope
from app.logs import get_logger
from app.models import TERMINAL_JOB_STATUSES, File, FileStatus, Job, JobStatus
from app.storage import (
    ObjectStore,
    StoreError,
    WriterScope,
    merged_key,
    output_key,
    result_key,
)
from workers import metrics
from workers.merge import build_merged, plan_merge

log = get_logger("quire.archive")
ZIP32_LIMIT = 0xFFFF_FFFF
# Local header and data descriptor per member, besides its name: a safe over-estimate.
MEMBER_OVERHEAD = 128
FILE_MODE = stat.S_IFREG | 0o644
HEARTBEAT_SECONDS = 60.0


def queue_archive_after_commit(session: Session, job_id: str) -> None:
    """Send the archive task of a job whose archive this transaction claimed, once it commits."""
    queue.queue_after_commit(session, queue.ARCHIVE_TASK, job_id)
    log.info("archive.queued", job_id=job_id)


def start_archive_if_done(job_id: str) -> bool:
    """Claim and queue the archive of a job whose files all finished; True if this call did."""
    with session_scope() as session:
        claimed = transitions.claim_archive(session, job_id)
        if claimed:
            queue_archive_after_commit(session, job_id)
    return claimed


def _members(job_id: str, files: Sequence[Any], store: ObjectStore) -> Iterator[Any]:
    modified = datetime.now(UTC)
    offset = 0
    for file_id, name, size, crc in files:
        # Plain zip is smaller and opens everywhere; switch to Zip64 only once offsets need it.
        offset += size + len(name.encode()) + MEMBER_OVERHEAD
        method = NO_COMPRESSION_32 if offset < ZIP32_LIMIT else NO_COMPRESSION_64
        yield (
            name,
            modified,
            FILE_MODE,
            method(size, crc),
            store.iter_chunks(output_key(job_id, file_id)),
        )


def completed_files(session: Session, job_id: str) -> Sequence[Any]:
    """(id, output name, size, CRC-32) of each converted file, in the zip's order."""
    return session.execute(
        select(File.id, File.output_name, File.output_bytes, File.output_crc32)
        .where(File.job_id == job_id, File.status == FileStatus.COMPLETED)
        .order_by(File.position)
    ).all()


def write_archive(
    job_id: str,
    files: Sequence[Any],
    store: ObjectStore,
    key: str,
    heartbeat: Callable[[], None] | None = None,
) -> int:
    """Stream the PDFs into one zip object at ``key``; return its size in bytes.

    ``heartbeat`` is called every HEARTBEAT_SECONDS while it works, so that the sweeper can
    tell a long archive from a lost one."""
    beat_at = time.monotonic() + HEARTBEAT_SECONDS
    with WriterScope(store.open_writer(key, "application/zip")) as writer:
        for chunk in stream_zip(_members(job_id, files, store)):
            writer.write(chunk)
            if heartbeat is not None and time.monotonic() > beat_at:
                heartbeat()
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
        if heartbeat is not None:
            # Once more before the object appears: it may raise to abort the write (the job
            # was cancelled, deleted or retried meanwhile).
            heartbeat()
    return writer.bytes_written


class ArchiveSuperseded(Exception):
    """The job was cancelled, deleted or retried while its archive was being written."""


def _touch(job_id: str, claimed_at: datetime) -> None:
    with session_scope() as session:
        if not transitions.touch_archive(session, job_id, claimed_at):
            raise ArchiveSuperseded(job_id)


def _nobodys(session: Session, job_id: str, claimed_at: datetime) -> bool:
    """Whether this round's zip and merged PDF are nobody's: the job was deleted, or cancelled
    in this round. A duplicate task's are the job's own, and a retry's new round writes its own
    at the same keys, so neither is removed."""
    job = session.get(Job, job_id)
    return job is None or (
        job.status == JobStatus.CANCELLED and job.archive_enqueued_at == claimed_at
    )


def _remove_results(job_id: str, store: ObjectStore) -> None:
    store.delete_prefix(result_key(job_id))
    store.delete_prefix(merged_key(job_id))
    log.info("archive.dropped", job_id=job_id, reason="job_cancelled_or_deleted")


def _drop_superseded(job_id: str, claimed_at: datetime, store: ObjectStore) -> None:
    with session_scope() as session:
        orphan = _nobodys(session, job_id, claimed_at)
    if orphan:
        _remove_results(job_id, store)
    else:
        log.info("archive.dropped", job_id=job_id, reason="job_retried_or_completed")


def build_archive(job_id: str, store: ObjectStore) -> None:
    # The webhook is sent from inside this span, so its trace goes on from here.
    with tracing.span("job.archive", job_id=job_id):
        _build_archive(job_id, store)


def _build_archive(job_id: str, store: ObjectStore) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in TERMINAL_JOB_STATUSES or job.archive_enqueued_at is None:
            # Deleted; a redelivered task for an archive already written; or a late task of an
            # earlier round of a retried job, whose files are being converted again.
            return
        # This round's mark: the archive is written and the job completed only while it holds.
        claimed_at = job.archive_enqueued_at
        files = completed_files(session, job_id)
        merge_plan = plan_merge(session, job) if files else None
    if not files:
        with session_scope() as session:
            failed = transitions.fail_job(
                session,
                job_id,
                "No file could be converted; each file's error_message says why.",
            )
            if failed:
                webhooks.schedule_delivery(session, job_id)
        log.info("job.failed", job_id=job_id, reason="no_file_converted")
        return
    started = time.monotonic()
    merged_bytes = None
    try:
        size = write_archive(
            job_id, files, store, result_key(job_id), lambda: _touch(job_id, claimed_at)
        )
        if merge_plan is not None:
            # In the archive's task, under its claim and heartbeat: a worker that dies while
            # merging leaves the archive's lease to run out, and the task that the sweeper
            # sends again writes both anew. The job is COMPLETED only once both are stored.
            merged_bytes = build_merged(
                job_id,
                merge_plan,
                store,
                get_settings().resolved_scratch_dir,
                lambda: _touch(job_id, claimed_at),
            ).bytes_written
    except ArchiveSuperseded:
        # The zip may be stored already (superseded while merging): removed if it is nobody's.
        _drop_superseded(job_id, claimed_at, store)
        return
    except StoreError:
        try:  # a deleted job's PDFs vanish under its archive: that is no failure of the job
            _touch(job_id, claimed_at)
        except ArchiveSuperseded:
            _drop_superseded(job_id, claimed_at, store)
            return
        raise
    with session_scope() as session:
        finished = transitions.finish_job(
            session, job_id, result_bytes=size, claimed_at=claimed_at, merged_bytes=merged_bytes
        )
        # Not finished: the job was deleted, cancelled or retried after the last heartbeat, or
        # a duplicate of this task completed it first. Only for a deleted job, or one cancelled
        # in this round, is the zip nobody's: a duplicate's zip is the job's archive, and a
        # retry's new round writes its own at the same key.
        orphan = not finished and _nobodys(session, job_id, claimed_at)
        if finished:  # the callback is queued in the transaction that ends the job
            webhooks.schedule_delivery(session, job_id)
    if orphan:  # nothing refers to the zip: a deleted job, or a cancelled one has no archive
        _remove_results(job_id, store)
        return
    if not finished:
        log.info("archive.dropped", job_id=job_id, reason="job_retried_or_completed")
        return
    metrics.archive_written(size, time.monotonic() - started)
    tracing.annotate(outcome="completed", pdfs=len(files), bytes=size)
    log.info("job.completed", job_id=job_id, pdfs=len(files), bytes=size, merged_bytes=merged_bytes)
