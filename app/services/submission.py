"""Making a job from an upload: ``POST /api/v1/jobs`` without the HTTP.

The upload is already stored when ``submit`` runs: streamed there by the route (multipart), or
PUT by the client to a presigned URL (a direct upload, ``app.services.uploads``). ``submit``
lists its DOCX entries, creates the job and its files in one transaction, and queues the
ingest after the commit. With an Idempotency-Key, a repeated request gets the first one's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import queue, tracing
from app.callback_targets import TargetRefused, check_callback_url
from app.config import Settings
from app.db import session_scope
from app.jobs import JobSpec, UploadGone, create_job, find_idempotent_job
from app.logs import get_logger
from app.models import Job, Upload
from app.schemas import SubmissionOptions
from app.services import quotas
from app.services.errors import (
    InvalidRequest,
    NothingUploaded,
    OutOfSpace,
    ServiceError,
    UploadAlreadyUsed,
    UploadNotFound,
)
from app.storage import ObjectNotFound, ObjectStore, job_prefixes, upload_key
from app.zipinput import DocxEntry, UploadRejected, list_docx_entries

log = get_logger("quire.api")


@dataclass(frozen=True)
class Submission:
    """A request to make a job, as the route read it."""

    job_id: str
    owner: str
    # A direct upload's options come validated (its JSON body); a multipart upload's are its
    # form fields as sent, validated here so that a refusal also removes what was stored.
    options: SubmissionOptions | Mapping[str, str]
    digest: str  # of the request, for the Idempotency-Key
    idempotency_key: str | None = None
    # Bytes the route stored at upload_key(job_id) from a multipart body; None for a direct
    # upload, whose row (of the same id) the job takes over.
    upload_bytes: int | None = None

    @property
    def direct(self) -> bool:
        return self.upload_bytes is None


@dataclass(frozen=True)
class Accepted:
    job_id: str
    file_count: int
    replayed: bool = False  # the job an earlier request with the same Idempotency-Key made


def invalid_request(error: ValidationError) -> InvalidRequest:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors()
    )
    return InvalidRequest(f"Invalid request: {problems}")


def check_room(store: ObjectStore, settings: Settings) -> None:
    """Refuse a multipart upload before receiving it when the store's disk is nearly full."""
    free = store.free_bytes()
    if free is not None and free < settings.min_free_bytes:
        raise OutOfSpace(
            "The server is low on disk space and accepts no uploads now; try again later."
        )


def check_before_upload(
    owner: str, idempotency_key: str | None, store: ObjectStore, settings: Settings
) -> None:
    """What refuses a multipart upload before its body is received, so that nothing is stored
    for it: a nearly full disk (OutOfSpace), or a quota that no job could pass now
    (QuotaExceeded). It blocks (the database), so the API runs it in a worker thread."""
    check_room(store, settings)
    quotas.check_before_upload(owner, settings, idempotency_key)


def submit(submission: Submission, store: ObjectStore, settings: Settings) -> Accepted:
    """Create the job (or find the one an earlier request with its key made); it blocks, so
    the API runs it in a worker thread.

    Raises InvalidRequest (options, callback URL), UploadRejected (the zip), IdempotencyConflict,
    QuotaExceeded (app.services.quotas), and for a direct upload UploadNotFound,
    UploadAlreadyUsed or NothingUploaded. A multipart upload that made no new job is removed
    from the store; a direct upload stays, so a refused one can be submitted again."""
    try:
        accepted = _accept(submission, store, settings)
    except BaseException:
        _discard(submission, store)  # refused, or the database or store failed: no job exists
        raise
    if accepted.replayed:
        _discard(submission, store)  # the earlier request's job holds its own copy
    else:
        log.info("job.accepted", job_id=submission.job_id, direct=submission.direct)
    return accepted


def _discard(submission: Submission, store: ObjectStore) -> None:
    # A direct upload stays: it is the client's, who may fix it and PUT it again.
    if not submission.direct:
        store.delete_prefix(job_prefixes(submission.job_id)[0])


def _options(submission: Submission) -> SubmissionOptions:
    if isinstance(submission.options, SubmissionOptions):
        return submission.options
    try:
        # Empty form fields mean "not given", as browsers send them for untouched inputs.
        fields = {k: v for k, v in submission.options.items() if v != ""}
        return SubmissionOptions.model_validate(fields)
    except ValidationError as error:
        raise invalid_request(error) from None


def _accept(submission: Submission, store: ObjectStore, settings: Settings) -> Accepted:
    options = _options(submission)
    if options.callback_url is not None:
        # The host name is resolved: this runs in a worker thread, never on the event loop.
        try:
            check_callback_url(options.callback_url, settings.webhook_allow_private)
        except TargetRefused as error:
            raise InvalidRequest(f"Invalid request: callback_url: {error}") from None
    try:
        return _create(submission, options, store, settings)
    except (IntegrityError, UploadGone):
        # Two requests with one key raced; the unique index let one through: answer with it.
        replay = _replay_after_race(submission)
        if replay is not None:
            return replay
        if submission.direct:
            # The direct upload went while this request listed it: another request made it a
            # job, or the sweeper expired it. No job was made here: answer as if it came later.
            with session_scope() as session:
                raise _no_upload(session, submission.job_id, submission.owner) from None
        raise


def _create(
    submission: Submission, options: SubmissionOptions, store: ObjectStore, settings: Settings
) -> Accepted:
    key = submission.idempotency_key
    # The ingest is sent when the session commits, inside this span: its trace goes on from here.
    with tracing.span("job.create", job_id=submission.job_id) as span, session_scope() as session:
        if key is not None:
            earlier = find_idempotent_job(session, submission.owner, key, submission.digest)
            if earlier is not None:
                span.set_attribute("replayed", True)
                return Accepted(earlier.id, earlier.file_count, replayed=True)
        if submission.upload_bytes is None:
            upload_bytes = _take_upload(session, store, submission.job_id, submission.owner)
        else:
            upload_bytes = submission.upload_bytes
        entries = _list_entries(store, upload_key(submission.job_id), settings.max_files_per_job)
        # Last, just before the job is made: the quota lock it takes is held until the commit.
        quotas.admit(session, submission.owner, settings, len(entries))
        spec = JobSpec(
            job_id=submission.job_id,
            owner=submission.owner,
            upload_bytes=upload_bytes,
            pdf_a=options.pdf_a,
            tagged_pdf=options.tagged_pdf,
            strict_fonts=options.strict_fonts,
            merge=options.merge,
            merge_failure_page=options.merge_failure_page,
            callback_url=options.callback_url,
            idempotency_key=key,
            request_digest=submission.digest if key is not None else None,
        )
        create_job(session, spec, entries, consume_upload=submission.direct)
        span.set_attribute("file_count", len(entries))
        queue.queue_after_commit(session, queue.INGEST_TASK, submission.job_id)
    return Accepted(submission.job_id, len(entries))


def _replay_after_race(submission: Submission) -> Accepted | None:
    if submission.idempotency_key is None:
        return None
    with session_scope() as session:
        earlier = find_idempotent_job(
            session, submission.owner, submission.idempotency_key, submission.digest
        )
        return Accepted(earlier.id, earlier.file_count, replayed=True) if earlier else None


def _list_entries(store: ObjectStore, key: str, max_files: int) -> list[DocxEntry]:
    with store.open_reader(key) as source:
        return list_docx_entries(source, max_files)


def _no_upload(session: Session, upload_id: str, owner: str) -> ServiceError:
    job = session.get(Job, upload_id)
    if job is not None and job.owner == owner:
        return UploadAlreadyUsed(upload_id, job.id)
    return UploadNotFound(upload_id)


def _take_upload(session: Session, store: ObjectStore, upload_id: str, owner: str) -> int:
    """The size of a direct upload that is ready to become a job; refuses it otherwise."""
    upload = session.get(Upload, upload_id)
    if upload is None or upload.owner != owner:
        raise _no_upload(session, upload_id, owner)
    try:
        size = store.size(upload_key(upload_id))
    except ObjectNotFound:
        raise NothingUploaded(upload_id) from None
    if size > upload.max_bytes:
        # S3 cannot bound a presigned PUT: the limit holds here instead.
        store.delete_prefix(upload_key(upload_id))
        raise UploadRejected(
            413, f"The upload is larger than the limit of {upload.max_bytes} bytes."
        )
    return size
