"""Ingest: copy each DOCX entry of the uploaded zip into its own input object, then queue it.

The listing at upload time read only the central directory, whose sizes can lie; here the bytes
are counted as they are decompressed, and an entry past the size or ratio limit is FAILED
instead of filling the disk. Files are committed in batches and handed to the scheduler
(app/scheduling.py) as they are, so conversions start while a large zip is still being unpacked.
"""

from __future__ import annotations

import time
import zipfile
import zlib
from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from app import scheduling, tracing, transitions, webhooks
from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
from app.models import TERMINAL_JOB_STATUSES, File, FileStatus, Job, utcnow
from app.storage import ObjectStore, StoreError, input_key, upload_key
from app.zipinput import ENCRYPTED_FLAG, UploadRejected, list_docx_entries
from workers.archive import queue_archive_after_commit

log = get_logger("quire.ingest")
BATCH = 50
CHUNK = 1024 * 1024
# A batch is also committed after this long, so a cancelled or deleted job's ingest stops soon
# even when its entries are large.
FLUSH_SECONDS = 2.0
FILES = transitions.FILES
# By primary key, in Core: unlike the ORM's bulk UPDATE, it does not fail when the rows were
# deleted meanwhile (the job was deleted).
_RECORD_INPUT = (
    update(FILES)
    .where(FILES.c.id == bindparam("file_id"))
    .values(input_bytes=bindparam("size"), touched_at=bindparam("now"))
)


class EntryRefused(Exception):
    """This entry cannot become an input object; the message goes to the file's row."""


@dataclass
class Batch:
    copied: dict[str, int] = field(default_factory=dict)  # file id -> input bytes
    failed: dict[str, str] = field(default_factory=dict)  # file id -> message

    def __len__(self) -> int:
        return len(self.copied) + len(self.failed)


def _job_active(job_id: str) -> bool:
    with session_scope() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is not None and status not in TERMINAL_JOB_STATUSES


def _flush(job_id: str, batch: Batch, store: ObjectStore) -> bool:
    """Record and queue a batch; False when the job was cancelled or deleted: the ingest stops."""
    now = utcnow()
    with session_scope() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status is None or status in TERMINAL_JOB_STATUSES:
            if status is None:  # deleted while this batch was copied: its objects are orphans
                for file_id in batch.copied:
                    store.delete_prefix(input_key(job_id, file_id))
            log.info("ingest.stopped", job_id=job_id, status=status)
            return False
        if batch.copied:
            # touched_at: the sweeper counts a file's wait in the queue from here.
            session.execute(
                _RECORD_INPUT,
                [
                    {"file_id": file_id, "size": size, "now": now}
                    for file_id, size in batch.copied.items()
                ],
            )
        failed = sum(
            transitions.fail_files(session, [file_id], message)
            for file_id, message in batch.failed.items()
        )
        archive_due = transitions.record_finished(session, job_id, failed)
        transitions.touch_job(session, job_id)  # progress: the sweeper leaves this ingest alone
        # The copied files wait their turn: the scheduler sends what fits in its window, fairly
        # among the running jobs, after the commit (a conversion must find its input recorded).
        scheduling.dispatch(session)
        if archive_due:  # every file of the job was refused
            queue_archive_after_commit(session, job_id)
    log.info("ingest.batch", job_id=job_id, copied=len(batch.copied), failed=len(batch.failed))
    return True


def _copy_entry(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    store: ObjectStore,
    key: str,
    settings: Settings,
    budget: int,
) -> int:
    if info.flag_bits & ENCRYPTED_FLAG:
        raise EntryRefused(
            "The entry is encrypted inside the zip (a password-protected zip "
            "entry); upload it without zip encryption."
        )
    limit = min(settings.max_entry_bytes, budget)
    limit_name = (
        "the size limit per file"
        if limit == settings.max_entry_bytes
        else ("the job's total size limit")
    )
    ratio_limit = max(info.compress_size, 1) * settings.max_compression_ratio
    writer = store.open_writer(
        key, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(CHUNK):
                writer.write(chunk)
                if writer.bytes_written > limit:
                    raise EntryRefused(
                        f"The entry unpacks to more than {limit} bytes, past {limit_name}."
                    )
                if writer.bytes_written > ratio_limit:
                    raise EntryRefused(
                        "The entry's compression ratio is beyond "
                        f"{settings.max_compression_ratio:g}:1 (a zip bomb?); refused."
                    )
        writer.commit()
    except EntryRefused:
        writer.abort()
        raise
    except NotImplementedError:
        writer.abort()
        raise EntryRefused(
            "The entry uses a zip compression method Quire cannot read; zip it again with "
            "standard (deflate) compression."
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        writer.abort()
        raise EntryRefused(
            f"The entry is damaged in the zip and cannot be read ({error})."
        ) from None
    except BaseException:
        writer.abort()
        raise
    return writer.bytes_written


def _pending_files(session: Session, job_id: str) -> list[tuple[str, int]]:
    rows = session.execute(
        select(File.id, File.position)
        .where(File.job_id == job_id, File.status == FileStatus.PENDING, File.input_bytes.is_(None))
        .order_by(File.position)
    )
    return [(file_id, position) for file_id, position in rows]


def ingest_job(job_id: str, store: ObjectStore, settings: Settings) -> None:
    # The conversions are sent from inside this span, so each one's trace goes on from here.
    with tracing.span("job.ingest", job_id=job_id):
        _ingest_job(job_id, store, settings)


def _ingest_job(job_id: str, store: ObjectStore, settings: Settings) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in TERMINAL_JOB_STATUSES:
            return
        transitions.start_job(session, job_id)
        todo = _pending_files(session, job_id)
        tracing.annotate(file_count=len(todo))
        # A redelivered or repeated ingest goes on with what the first one left of the budget.
        used = session.scalar(
            select(func.coalesce(func.sum(File.input_bytes), 0)).where(File.job_id == job_id)
        )
    if not todo:
        return
    try:
        _unpack(
            job_id, todo, store, settings, settings.max_total_uncompressed_bytes - int(used or 0)
        )
    except StoreError:
        if _job_active(job_id):
            raise
        # Deleted meanwhile: its upload went from under the reader. Nothing is left to do.
        log.info("ingest.stopped", job_id=job_id, reason="job_ended")


def _refuse_upload(job_id: str, message: str) -> None:
    """The job ends FAILED with the reason: a terminal job is neither ingested nor re-sent again."""
    with session_scope() as session:
        if transitions.fail_job(session, job_id, message):
            webhooks.schedule_delivery(session, job_id)
    log.info("ingest.refused", job_id=job_id, reason=message)


def _unpack(
    job_id: str, todo: list[tuple[str, int]], store: ObjectStore, settings: Settings, budget: int
) -> None:
    with store.open_reader(upload_key(job_id)) as source:
        # The API listed this zip before the 202, but the object read here need not be the one
        # it listed: an S3 presigned PUT stays valid until it expires, so a direct upload can be
        # replaced after it became a job. zipfile reads the whole central directory into memory
        # at open, and one that lies about its entry count could take the worker down (and the
        # sweeper would send the ingest again): bound it first, as the API does.
        try:
            list_docx_entries(source, settings.max_files_per_job)
        except UploadRejected as refusal:
            _refuse_upload(job_id, f"The uploaded zip cannot be unpacked: {refusal.message}")
            return
        source.seek(0)
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
            _refuse_upload(job_id, "The uploaded zip can no longer be read.")
            return
        with archive:
            infos = archive.infolist()
            batch = Batch()
            flush_at = time.monotonic() + FLUSH_SECONDS
            for file_id, position in todo:
                try:
                    if position >= len(infos):
                        raise EntryRefused("The entry is missing from the uploaded zip.")
                    size = _copy_entry(
                        archive,
                        infos[position],
                        store,
                        input_key(job_id, file_id),
                        settings,
                        budget,
                    )
                    budget -= size
                    batch.copied[file_id] = size
                except EntryRefused as refusal:
                    batch.failed[file_id] = str(refusal)
                if len(batch) >= BATCH or time.monotonic() >= flush_at:
                    if not _flush(job_id, batch, store):
                        return
                    batch = Batch()
                    flush_at = time.monotonic() + FLUSH_SECONDS
            if len(batch):
                _flush(job_id, batch, store)
