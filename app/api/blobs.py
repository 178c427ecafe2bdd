"""The local store's "presigned" URLs: HMAC-signed, expiring links served by the API itself.

S3 and MinIO serve their own presigned URLs; this route exists for the embedded default only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.api.deps import StoreDep
from app.api.errors import ApiError
from app.storage import LocalStore

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
    if not isinstance(store, LocalStore):
        raise ApiError(404, "This server's objects are served by the object store, not the API.")
    if not store.verify(key, expires, filename, content_type, signature):
        raise ApiError(403, "This link is invalid or has expired; ask the API for a new one.")
    path = store.path(key)
    if not path.is_file():
        raise ApiError(404, "The object behind this link no longer exists.")
    return FileResponse(path, media_type=content_type, filename=filename)
