"""Converting one file: claim it, fetch its DOCX, validate, convert, store the PDF, record it."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import bindparam, select

from app import scheduling, tracing, transitions
from app.config import Settings
from app.db import session_scope
from app.logs import bind_ids, get_logger
from app.models import TERMINAL_JOB_STATUSES
from app.storage import ObjectNotFound, ObjectStore, input_key, output_key
from workers import fonts, metrics
from workers.archive import queue_archive_after_commit
from workers.formats import Prepared, prepare
from workers.libreoffice import (
    ConversionError,
    ConversionTimeout,
    Converter,
    ConverterCrashed,
    PdfOptions,
)
from workers.validation import InvalidDocument

log = get_logger("quire.convert")


# Scratch-space failures: the worker's disk, not the document. The task is retried a few
# times (the disk may free up), then the file fails with a message that says so.
SCRATCH_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOTDIR}
SCRATCH_RESERVE = 1024 * 1024  # less free space than this after a failed conversion: disk full


class ScratchSpaceError(Exception):
    """The worker's scratch space is full or not writable."""

    def __init__(self, error: OSError) -> None:
        super().__init__(
            f"The worker's scratch space is full or not writable ({error.strerror}); "
            "the document was not converted. Free space on the worker and retry."
        )


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            crc = zlib.crc32(chunk, crc)
    return crc


# Built once on the tables: building this query through the ORM for every file cost more CPU
# than running it (#3).
_FILES, _JOBS = transitions.FILES, transitions.JOBS
_CLAIM_ROW = (
    select(
        _FILES.c.job_id,
        _FILES.c.attempts,
        _FILES.c.filename,
        _JOBS.c.status,
        _JOBS.c.pdf_a,
        _JOBS.c.tagged_pdf,
        _JOBS.c.strict_fonts,
    )
    .join(_JOBS, _JOBS.c.id == _FILES.c.job_id)
    .where(_FILES.c.id == bindparam("file_id"))
)


@dataclass(frozen=True)
class _Claimed:
    job_id: str
    options: PdfOptions
    strict_fonts: bool  # a missing font fails the file (workers/fonts.py)
    token: str  # this claim's fencing token
    filename: str  # the name it was sent under: words the message when its bytes are no document


def _claim(file_id: str, max_attempts: int) -> _Claimed | None:
    """The file's job id, its job's options and this claim's fencing token if this task
    should convert it, None when there is nothing to do.

    A file whose conversion was already started ``max_attempts`` times and never finished (its
    worker or LibreOffice died each time) is FAILED here instead of being tried again.
    """
    with session_scope() as session:
        row = session.execute(_CLAIM_ROW, {"file_id": file_id}).first()
        if row is None or row.status in TERMINAL_JOB_STATUSES:
            return None
        if row.attempts < max_attempts:
            token = transitions.claim_file(session, file_id)
            if token is None:
                return None
            options = PdfOptions(pdf_a=row.pdf_a, tagged=row.tagged_pdf)
            return _Claimed(row.job_id, options, bool(row.strict_fonts), token, row.filename)
    fail_file(
        file_id,
        f"The conversion of this document was started {row.attempts} times and never "
        "finished (LibreOffice or its worker stopped each time); it was not tried again.",
        reason="attempts_exhausted",
    )
    return None


def fail_file(file_id: str, message: str, *, reason: str, token: str | None = None) -> None:
    """FAIL a file outside a conversion (its tries ran out), count it as finished in its job,
    and start the job's archive if it was the last one. With ``token``, only while that claim
    is the file's latest (a task giving up on its own claim)."""
    with session_scope() as session:
        job_id = session.execute(transitions.job_of_file(file_id)).scalar_one_or_none()
        failed = transitions.fail_files(session, [file_id], message, token=token)
        # On the file's span when its claim found the tries used up, else on the task's.
        tracing.annotate(file_id=file_id, job_id=job_id, outcome="failed", reason=reason)
        if job_id is not None and transitions.record_finished(session, job_id, failed):
            queue_archive_after_commit(session, job_id)
        if failed:
            scheduling.dispatch(session)  # its place in the window goes to the next file
    metrics.files_failed(reason, failed)


def _convert_with_one_retry(
    converter: Converter, source: Path, target: Path, timeout: float, options: PdfOptions
) -> None:
    try:
        converter.convert(source, target, timeout, options)
    except (ConverterCrashed, ConversionTimeout) as first:
        # A crash or a hang may come from the instance (its state, a stopped process), not from
        # this document: one more try on a fresh instance. A document that hangs or crashes
        # LibreOffice every time fails on the second.
        log.warning("convert.retry", source=source.name, after=type(first).__name__)
        converter.convert(source, target, timeout, options)


def _record(
    file_id: str,
    job_id: str,
    store: ObjectStore,
    target: Path | None,
    error: str | None,
    token: str,
    fonts: dict[str, Any] | None = None,
) -> bool:
    """The file's outcome: its PDF stored and COMPLETED, or FAILED with ``error``; False when
    another delivery of the same task had recorded it already, or claimed it since (``token``
    is no longer the file's: this worker was slow, and its successor records the file)."""
    with session_scope() as session:
        if target is not None and error is None:
            size, crc = target.stat().st_size, _crc32(target)
            # Upload inside the transaction whose conditional UPDATE won: the row stays locked
            # until commit, so a concurrent or redelivered conversion of the same file finds
            # it finished and never overwrites the PDF whose size and CRC were recorded.
            finished = transitions.complete_file(
                session, file_id, output_bytes=size, crc32=crc, token=token, fonts=fonts
            )
            if finished:
                store.put_file(output_key(job_id, file_id), str(target), "application/pdf")
        else:
            failed = transitions.fail_files(session, [file_id], error or "unknown", token=token)
            finished = failed > 0
        if finished and transitions.record_finished(session, job_id, 1):
            queue_archive_after_commit(session, job_id)
        if finished:
            # Its place in the window goes to the next file, chosen fairly (app/scheduling.py),
            # in this transaction: were the worker to die after the commit, the file chosen is
            # marked in flight and the sweeper sends it again (resend_lost_dispatches).
            scheduling.dispatch(session)
    if finished:
        event = "file.failed" if error else "file.completed"
        log.info(event, job_id=job_id, file_id=file_id, error=error)
    else:
        # Said apart, so a log counting a host's results never counts one that lost to a later
        # claim (this worker was slow, or another delivery of the task finished it first).
        log.info("file.not_recorded", job_id=job_id, file_id=file_id, error=error)
    return finished


# The claim this thread's conversion holds: (file id, fencing token). The task's retry and
# give-up paths run after convert_file raised, and act only on the claim it made.
_claimed = threading.local()


def held_claim(file_id: str) -> str | None:
    """The fencing token of this thread's last claim of ``file_id``; None if it made none."""
    claim: tuple[str, str] | None = getattr(_claimed, "claim", None)
    return claim[1] if claim is not None and claim[0] == file_id else None


# This thread's scratch folder and the folder it was made for. Made once and emptied after each
# file: a folder made and removed per file cost about 0.5 ms of CPU here, and several ms of
# waiting on the journal of a busy disk (#3).
_scratch = threading.local()


def _work_dir(settings: Settings) -> Path:
    root = settings.resolved_scratch_dir
    if getattr(_scratch, "root", None) != root or not _scratch.path.is_dir():
        # Named for the host and the thread (unique on a host, and hosts sharing a disk differ
        # by name), so a folder a dead worker left is reused, and emptied, not piled up.
        path = root / f"convert-{socket.gethostname()}-{threading.get_native_id()}"
        path.mkdir(parents=True, exist_ok=True)
        _scratch.path = path
        _scratch.root = root if _empty(path) else None
    return cast(Path, _scratch.path)


def _empty(work: Path) -> bool:
    """Remove whatever a conversion left in its folder (input, PDF, a partial rewrite)."""
    try:
        with os.scandir(work) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
    except OSError:
        _scratch.root = None  # the next file tries again before using the folder
        return False
    return True


def _font_report(prepared: Prepared, target: Path, settings: Settings) -> dict[str, Any] | None:
    """The file's font report; None, logged, when it cannot be made: the PDF is good either
    way, and a report is not worth failing a conversion for (strict_fonts aside). A DOCX's
    fonts were read in the validator's pass (``prepare``), never a second time here."""
    try:
        if prepared.fonts_read:
            if prepared.requested is None:
                return None  # the reading failed, logged then
            return fonts.report_of(prepared.requested, target, settings)
        return fonts.font_report(prepared.path, target, settings)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up: not a report's failure to be logged and passed over
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("fonts.report_failed", error=f"{type(error).__name__}: {error}")
        return None


def convert_file(
    file_id: str, store: ObjectStore, converter: Converter, settings: Settings
) -> None:
    # The archive is sent from inside this span when this file is the job's last.
    with tracing.span("file.convert", file_id=file_id):
        _convert_file(file_id, store, converter, settings)


def _convert_file(
    file_id: str, store: ObjectStore, converter: Converter, settings: Settings
) -> None:
    _claimed.claim = None
    claimed = _claim(file_id, settings.max_attempts)
    if claimed is None:
        return
    job_id, options, token = claimed.job_id, claimed.options, claimed.token
    _claimed.claim = (file_id, token)
    bind_ids(job_id=job_id)  # every line logged for this file carries its job's id too
    tracing.annotate(job_id=job_id)
    started = time.monotonic()
    try:
        work = _work_dir(settings)
    except OSError as failure:
        if failure.errno not in SCRATCH_ERRORS:
            raise
        raise ScratchSpaceError(failure) from failure
    # Scratch names are fixed, never the name the file had in the zip; the suffix is the kind
    # its bytes say it is (workers/formats.py).
    source, target = work / "input", work / "output.pdf"
    error: str | None = None
    reason: str | None = None  # a fixed word for the metrics, beside the message for people
    report: dict[str, Any] | None = None
    try:
        try:
            store.download_file(input_key(job_id, file_id), str(source))
            # Validated by what it is, and local links rewritten, in one read.
            prepared = prepare(source, claimed.filename)
            source = prepared.path
            _convert_with_one_retry(converter, source, target, settings.conversion_timeout, options)
            if not target.is_file() or target.stat().st_size == 0:
                raise ConversionError("LibreOffice wrote no PDF for this document.")
            # Made for every kind with a reader in fonts.READERS; None for the others.
            report = _font_report(prepared, target, settings)
            if claimed.strict_fonts and report is None:
                # Not to pass as "no missing fonts": strict_fonts asked for the fonts checked.
                error = fonts.STRICT_FONTS_UNCHECKED
                reason = "missing_fonts"
            elif claimed.strict_fonts and report is not None and report["missing"]:
                error = fonts.strict_fonts_message(report["missing"])
                reason = "missing_fonts"
        except ObjectNotFound:
            error = "The uploaded document is missing from the object store."
            reason = "missing_input"
        except (InvalidDocument, ConversionError) as failure:
            error = str(failure)
            reason = metrics.failure_reason(failure)
            if shutil.disk_usage(work).free < SCRATCH_RESERVE:  # LibreOffice could not write
                raise ScratchSpaceError(
                    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                ) from failure
        except OSError as failure:
            if failure.errno not in SCRATCH_ERRORS:
                raise  # something else: the task retries it
            raise ScratchSpaceError(failure) from failure
        recorded = _record(file_id, job_id, store, target, error, token, report)
        if recorded:
            metrics.conversion_finished(time.monotonic() - started, reason)
        outcome = ("failed" if error else "completed") if recorded else "recorded_already"
        tracing.annotate(outcome=outcome, reason=reason, error=error)
    finally:
        _empty(work)
