"""``/api/v1/jobs``: submit DOCX files, list and watch jobs, download the results."""

from __future__ import annotations

import hashlib
import logging
import posixpath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import queue
from app.api.deps import (
    BaseUrlDep,
    OwnerDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    caller,
    visible_job,
)
from app.api.errors import ApiError, responses
from app.callback_targets import TargetRefused, check_callback_url
from app.db import session_scope
from app.jobs import (
    Cursor,
    JobSpec,
    UploadGone,
    create_job,
    find_idempotent_job,
    get_job_view,
    list_jobs,
    new_job_id,
    parse_job_id,
)
from app.models import File, FileStatus, Job, JobStatus, Upload
from app.schemas import (
    JobCreated,
    JobList,
    JobStatusResponse,
    JobSubmission,
    SubmissionOptions,
)
from app.status import absolute, file_download_url, job_summary, status_document, status_url
from app.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    job_prefixes,
    output_key,
    result_key,
    upload_key,
)
from app.uploads import receive_upload
from app.zipinput import DocxEntry, UploadRejected, list_docx_entries

log = logging.getLogger("quire.api")
router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(caller)])

MAX_JSON_BODY = 64 * 1024
OPTION_PROPERTIES = {
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "Called with the job's status document when the job ends (webhooks).",
    },
    "pdf_a": {"type": "string", "enum": ["1b", "2b", "3b"], "description": "PDF/A level."},
    "tagged_pdf": {"type": "boolean", "description": "Write tagged PDF."},
}
SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A zip archive of .docx files (folders allowed).",
                        },
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Several .docx files, instead of a zip.",
                        },
                        **OPTION_PROPERTIES,
                    },
                },
                "encoding": {"files": {"contentType": "application/octet-stream"}},
            },
            "application/json": {
                "schema": JobSubmission.model_json_schema(),
                "example": {"upload_id": "7d9f5c1e-3b1a-4a8e-9c61-2f0b8f6c1d2a", "pdf_a": "2b"},
            },
        },
    }
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="The same key with the same body answers with the same job, once created.",
    ),
]


def _list_entries(store: ObjectStore, key: str, max_files: int) -> list[DocxEntry]:
    with store.open_reader(key) as source:
        return list_docx_entries(source, max_files)


def _options(fields: dict[str, str]) -> SubmissionOptions:
    try:
        # Empty form fields mean "not given", as browsers send them for untouched inputs.
        return SubmissionOptions.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as error:
        raise _invalid(error) from None


def _refuse_callback_target(url: str | None, allow_private: bool) -> None:
    # Here, in a worker thread, not in the schema's validator: a host name is resolved, and
    # DNS must not block the event loop.
    if url is None:
        return
    try:
        check_callback_url(url, allow_private)
    except TargetRefused as error:
        raise ApiError(422, f"Invalid request: callback_url: {error}") from None


def _invalid(error: ValidationError) -> ApiError:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors()
    )
    return ApiError(422, f"Invalid request: {problems}")


def _replayed(job: Job, base: str) -> JSONResponse:
    return _accepted(job.id, job.file_count, base, replayed=True)


def _accepted(job_id: str, file_count: int, base: str, *, replayed: bool = False) -> JSONResponse:
    location = status_url(base, job_id)
    body = JobCreated(
        job_id=job_id, status=JobStatus.PENDING, file_count=file_count, status_url=location
    )
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


def _no_upload(session: Session, upload_id: str, owner: str) -> ApiError:
    job = session.get(Job, upload_id)
    if job is not None and job.owner == owner:
        return ApiError(409, f"Upload {upload_id} was already made into job {job.id}.")
    return ApiError(
        404,
        f"No upload with id {upload_id!r} exists (unused uploads are removed after they expire).",
    )


def _take_upload(session: Session, store: ObjectStore, upload_id: str, owner: str) -> int:
    """The size of a direct upload that is ready to become a job; refuses it otherwise."""
    upload = session.get(Upload, upload_id)
    if upload is None or upload.owner != owner:
        raise _no_upload(session, upload_id, owner)
    try:
        size = store.size(upload_key(upload_id))
    except ObjectNotFound:
        raise ApiError(
            409, f"Nothing was uploaded for upload {upload_id} yet: PUT the zip to its url first."
        ) from None
    if size > upload.max_bytes:
        # S3 cannot bound a presigned PUT: the limit holds here instead.
        store.delete_prefix(upload_key(upload_id))
        raise UploadRejected(
            413, f"The upload is larger than the limit of {upload.max_bytes} bytes."
        )
    return size


def _refuse_low_disk(store: ObjectStore, min_free_bytes: int) -> None:
    if isinstance(store, LocalStore) and store.free_bytes() < min_free_bytes:
        raise ApiError(
            507, "The server is low on disk space and accepts no uploads now; try again later."
        )


async def _read_submission(request: Request) -> JobSubmission:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise ApiError(413, f"A JSON submission is at most {MAX_JSON_BODY} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise ApiError(413, f"A JSON submission is at most {MAX_JSON_BODY} bytes.")
    try:
        return JobSubmission.model_validate_json(bytes(body))
    except ValidationError as error:
        raise _invalid(error) from None


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    openapi_extra=SUBMIT_BODY,
    responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 503, 507),
    summary="Submit DOCX files for conversion",
)
async def submit_job(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    base: BaseUrlDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create a job from a zip of DOCX files (`file`), several DOCX files (`files`, repeated),
    or a direct upload (JSON `{"upload_id": ...}`, see `POST /api/v1/uploads`).

    The multipart body is streamed into the object store as it arrives. Answers at once with
    202; conversion happens in the background. With an `Idempotency-Key`, sending the same
    request again answers with the job the first one created (header `Idempotent-Replayed`).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    direct = media_type == "application/json"

    async def discard_upload() -> None:
        # A multipart upload that made no (new) job may not stay stored. A direct upload
        # stays: it is the client's, who may fix it and PUT it again.
        if not direct:
            await run_in_threadpool(store.delete_prefix, job_prefixes(job_id)[0])

    if direct:
        submission = await _read_submission(request)
        job_id = submission.upload_id
        options: SubmissionOptions = submission
        digest = hashlib.sha256(submission.model_dump_json().encode()).hexdigest()
    else:
        _refuse_low_disk(store, settings.min_free_bytes)
        job_id = new_job_id()
        received = await receive_upload(
            request,
            store,
            upload_key(job_id),
            settings.max_upload_bytes,
            settings.max_files_per_job,
            digest=idempotency_key is not None,
        )
        digest = received.digest or ""
        try:
            options = _options(received.options)
        except ApiError:
            await discard_upload()
            raise

    def _create() -> JSONResponse:
        _refuse_callback_target(options.callback_url, settings.webhook_allow_private)
        with session_scope() as session:
            if idempotency_key is not None:
                earlier = find_idempotent_job(session, owner, idempotency_key, digest)
                if earlier is not None:
                    return _replayed(earlier, base)
            upload_bytes = (
                _take_upload(session, store, job_id, owner) if direct else received.bytes_stored
            )
            entries = _list_entries(store, upload_key(job_id), settings.max_files_per_job)
            spec = JobSpec(
                job_id=job_id,
                owner=owner,
                upload_bytes=upload_bytes,
                pdf_a=options.pdf_a,
                tagged_pdf=options.tagged_pdf,
                callback_url=options.callback_url,
                idempotency_key=idempotency_key,
                request_digest=digest if idempotency_key is not None else None,
            )
            create_job(session, spec, entries, consume_upload=direct)
            queue.queue_after_commit(session, queue.INGEST_TASK, job_id)
        return _accepted(job_id, len(entries), base)

    def _replay_after_race() -> JSONResponse | None:
        # Two requests with one key raced; the unique index let one through: answer with it.
        if idempotency_key is None:
            return None
        with session_scope() as session:
            earlier = find_idempotent_job(session, owner, idempotency_key, digest)
            return _replayed(earlier, base) if earlier is not None else None

    def _upload_taken() -> ApiError:
        # The direct upload went while this request listed it: another request made it a job,
        # or the sweeper expired it. No job was made here, so answer as if it came later.
        with session_scope() as session:
            return _no_upload(session, job_id, owner)

    try:
        try:
            answer = await run_in_threadpool(_create)
        except (IntegrityError, UploadGone):
            replay = await run_in_threadpool(_replay_after_race)
            if replay is None:
                if direct:
                    raise await run_in_threadpool(_upload_taken) from None
                raise
            answer = replay
    except BaseException:
        await discard_upload()  # refused, or the database or store failed: no job exists
        raise
    if answer.headers.get("Idempotent-Replayed"):
        await discard_upload()  # the earlier request's job holds its own copy
        return answer
    log.info("job.accepted job_id=%s direct=%s", job_id, direct)
    return answer


@router.get(
    "",
    response_model=JobList,
    responses=responses(400, 401, 403),
    summary="List your jobs, newest first",
)
def list_all_jobs(
    session: SessionDep,
    owner: OwnerDep,
    base: BaseUrlDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> JobList:
    after = None
    if cursor is not None:
        after = Cursor.decode(cursor)
        if after is None:
            raise ApiError(400, "The cursor is not one this server issued; start without it.")
    jobs, next_cursor = list_jobs(session, owner, status=status, limit=limit, after=after)
    return JobList(
        jobs=[job_summary(job, base) for job in jobs],
        next_cursor=next_cursor.encode() if next_cursor is not None else None,
    )


@router.get(
    "/{job_id}",
    response_model=JobStatusResponse,
    responses=responses(401, 403, 404),
    summary="A job's status, progress and per-file results",
)
def get_job(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
) -> JobStatusResponse:
    job = visible_job(session, job_id, owner)
    view = get_job_view(session, job.id)
    assert view is not None  # the job was just read in this transaction
    return status_document(view, base, store, settings.presigned_url_ttl)


def _attachment(filename: str) -> str:
    """Content-Disposition for a name from the upload (RFC 6266): headers are Latin-1, so a
    Greek or CJK name raw would be a 500, and a quote or a newline would break the header. An
    ASCII stand-in for old clients, the exact name UTF-8 encoded for the rest."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _stream(store: ObjectStore, key: str, *, filename: str, content_type: str) -> StreamingResponse:
    """The object through the API, for clients that cannot reach the store."""
    return StreamingResponse(
        store.iter_chunks(key),
        media_type=content_type,
        headers={
            "Content-Disposition": _attachment(filename),
            "Content-Length": str(store.size(key)),
        },
    )


def _download_responses(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {
        **responses(401, 403, 404, 409),
        200: {"content": {media_type: {}}, "description": f"{what}, streamed (redirect=false)"},
        307: {"description": f"Redirect to a presigned, expiring URL of {what}"},
    }


RedirectQuery = Annotated[
    bool, Query(description="false streams the bytes through the API instead")
]


@router.get(
    "/{job_id}/files/{file_id}",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    responses=_download_responses("application/pdf", "the file's PDF"),
    summary="Download one file's PDF",
)
def download_file(
    job_id: str,
    file_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: RedirectQuery = True,
) -> RedirectResponse | StreamingResponse:
    job = visible_job(session, job_id, owner)
    # File ids are UUIDs: anything else names no file (and a NUL byte would be a database
    # error on PostgreSQL, not a 404).
    canonical = parse_job_id(file_id)
    file = session.get(File, canonical) if canonical is not None else None
    if file is None or file.job_id != job.id:
        raise ApiError(404, f"Job {job.id} has no file with id {file_id!r}.")
    if file.status == FileStatus.FAILED:
        raise ApiError(409, f"{file.filename} failed and has no PDF: {file.error_message}")
    if file.status != FileStatus.COMPLETED:
        raise ApiError(409, f"{file.filename} is {file.status.value}; it has no PDF yet.")
    if redirect:
        url = file_download_url(
            store, base, job.id, file.id, file.output_name, settings.presigned_url_ttl
        )
        return RedirectResponse(url, status_code=307)
    return _stream(
        store,
        output_key(job.id, file.id),
        filename=posixpath.basename(file.output_name),
        content_type="application/pdf",
    )


@router.get(
    "/{job_id}/download",
    status_code=307,
    response_class=RedirectResponse,
    response_model=None,
    responses=_download_responses("application/zip", "the result zip"),
    summary="Download the zip of PDFs",
)
def download_job(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    redirect: RedirectQuery = True,
) -> RedirectResponse | StreamingResponse:
    job = visible_job(session, job_id, owner)
    if job.status == JobStatus.FAILED:
        raise ApiError(409, f"Job {job.id} failed and has no archive: {job.error_message}")
    if job.status == JobStatus.CANCELLED:
        raise ApiError(
            409,
            f"Job {job.id} was cancelled and has no archive; its converted files can be "
            "downloaded one by one (files[].download_url).",
        )
    if job.status != JobStatus.COMPLETED:
        raise ApiError(409, f"Job {job.id} is {job.status.value}; its archive is not ready yet.")
    key = result_key(job.id)
    if not store.exists(key):
        raise ApiError(404, f"The archive of job {job.id} no longer exists.")
    filename = f"quire-{job.id}.zip"
    if redirect:
        url = store.presigned_get_url(
            key,
            filename=filename,
            content_type="application/zip",
            expires_in=settings.presigned_url_ttl,
        )
        return RedirectResponse(absolute(base, url), status_code=307)
    return _stream(store, key, filename=filename, content_type="application/zip")
