"""``POST /api/v1/uploads``: direct uploads, so big zips never pass through the API server.

The client asks for an upload, PUTs the zip straight to the object store at the presigned URL
it gets back, then creates the job with ``POST /api/v1/jobs {"upload_id": ...}``. The upload's
id becomes the job's id, so the object is already where the job's ingest reads it.

The embedded default's local store has no server of its own: the API accepts the PUT at a
signed ``/api/v1/blobs/...`` URL instead, with the size limit in the signature (app/api/blobs.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends

from app.api.deps import BaseUrlDep, OwnerDep, SessionDep, SettingsDep, StoreDep, caller
from app.api.errors import ApiError, responses
from app.jobs import new_job_id
from app.models import Upload, utcnow
from app.schemas import UploadOffer, UploadRequest
from app.status import absolute
from app.storage import upload_key

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])

UPLOAD_CONTENT_TYPE = "application/zip"


@router.post(
    "",
    status_code=201,
    response_model=UploadOffer,
    dependencies=[Depends(caller)],
    responses=responses(400, 401, 403, 413, 422),
    summary="Get a presigned URL to upload a zip straight to the object store",
)
def offer_upload(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    owner: OwnerDep,
    request: Annotated[UploadRequest | None, Body()] = None,
) -> UploadOffer:
    """PUT the zip to `url` with `headers` before `expires_at`, then create the job with
    `POST /api/v1/jobs` and the JSON body `{"upload_id": "..."}`.

    A zip over `max_bytes` is refused when the job is created (413), or at once here when
    its `size` is given. Unused uploads are removed some time after they expire.
    """
    max_bytes = settings.max_upload_bytes
    if request is not None and request.size is not None and request.size > max_bytes:
        raise ApiError(413, f"The upload is larger than the limit of {max_bytes} bytes.")
    upload_id = new_job_id()
    ttl = settings.presigned_url_ttl
    expires_at = utcnow() + timedelta(seconds=ttl)
    session.add(Upload(id=upload_id, owner=owner, max_bytes=max_bytes, expires_at=expires_at))
    url = store.presigned_put_url(
        upload_key(upload_id),
        content_type=UPLOAD_CONTENT_TYPE,
        expires_in=ttl,
        max_bytes=max_bytes,
    )
    return UploadOffer(
        upload_id=upload_id,
        url=absolute(base, url),
        headers={"Content-Type": UPLOAD_CONTENT_TYPE},
        expires_at=expires_at,
        max_bytes=max_bytes,
    )
