"""The local store's "presigned" URLs: HMAC-signed, expiring links served by the API itself.

S3 and MinIO serve their own presigned URLs; these routes exist for the embedded default only:
GET for downloads, PUT for direct uploads (``POST /api/v1/uploads``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import StoreDep
from app.api.errors import ApiError
from app.services.errors import UploadClosed
from app.services.uploads import accepts_put
from app.upload_stream import WRITE_BATCH, drain, write_pieces
from app.zipinput import UploadRejected

# Out of the OpenAPI document: a client never builds these URLs, it follows the ones the API
# hands out (createUpload's url, a download_url, a 307's Location), whose query is a signature.
# They exist on the local store only (S3 serves its own), so a generated client offering them
# as operations would offer calls that fail on every S3 deployment.
router = APIRouter(prefix="/api/v1/blobs", include_in_schema=False)


@router.get("/{key:path}")
def get_blob(
    key: str,
    store: StoreDep,
    expires: Annotated[int, Query()],
    filename: Annotated[str, Query(max_length=255)],
    content_type: Annotated[str, Query(max_length=100)],
    signature: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    urls = store.api_served_urls()
    if urls is None:
        raise ApiError(404, "This server's objects are served by the object store, not the API.")
    if not urls.verify(key, expires, filename, content_type, signature):
        raise ApiError(403, "This link is invalid or has expired; ask the API for a new one.")
    path = urls.path(key)
    if not path.is_file():
        raise ApiError(404, "The object behind this link no longer exists.")
    return FileResponse(path, media_type=content_type, filename=filename)


@router.put("/{key:path}")
async def put_blob(
    key: str,
    request: Request,
    store: StoreDep,
    expires: Annotated[int, Query()],
    max_bytes: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(max_length=128)],
) -> Response:
    """Stream the body into the object, within the limit the link was signed with."""
    urls = store.api_served_urls()
    if urls is None:
        raise ApiError(404, "This server's uploads go to the object store, not the API.")
    if not urls.verify_put(key, expires, max_bytes, signature):
        raise ApiError(403, "This upload link is invalid or has expired; ask for a new one.")
    if not await run_in_threadpool(accepts_put, key):
        raise UploadClosed()
    too_large = UploadRejected(413, f"The upload is larger than the limit of {max_bytes} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    writer = store.open_writer(key, "application/zip")
    pending: list[bytes | memoryview] = []
    pending_bytes = received = 0
    stream = request.stream()
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                await drain(stream)
                raise too_large
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= WRITE_BATCH:
                await run_in_threadpool(write_pieces, writer, pending)
                pending, pending_bytes = [], 0
        await run_in_threadpool(write_pieces, writer, pending)
        # Again before the object appears: the upload may have become a job while this PUT
        # streamed, and the job's input must not change under its ingest.
        if not await run_in_threadpool(accepts_put, key):
            raise UploadClosed()
        await run_in_threadpool(writer.commit)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return Response(status_code=200)
