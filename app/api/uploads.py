"""``POST /api/v1/uploads``: direct uploads, so big zips never pass through the API server.

The client asks for an upload, PUTs the zip straight to the object store at the presigned URL
it gets back, then creates the job with ``POST /api/v1/jobs {"upload_id": ...}``. The upload's
id becomes the job's id, so the object is already where the job's ingest reads it.

The embedded default's local store has no server of its own: the API accepts the PUT at a
signed ``/api/v1/blobs/...`` URL instead, with the size limit in the signature (app/api/blobs.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from starlette.concurrency import run_in_threadpool

from app.api.deps import BaseUrlDep, OwnerDep, SettingsDep, StoreDep, caller
from app.api.errors import responses
from app.schemas import UploadOffer, UploadRequest
from app.services import uploads as upload_service
from app.status import absolute

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])


@router.post(
    "",
    status_code=201,
    response_model=UploadOffer,
    operation_id="createUpload",
    dependencies=[Depends(caller)],
    responses=responses(400, 401, 403, 413, 422),
    summary="Get a presigned URL to upload a zip straight to the object store",
)
async def offer_upload(
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
    size = request.size if request is not None else None
    offer = await run_in_threadpool(upload_service.offer_upload, owner, size, store, settings)
    return UploadOffer(
        upload_id=offer.upload_id,
        url=absolute(base, offer.url),
        headers={"Content-Type": upload_service.UPLOAD_CONTENT_TYPE},
        expires_at=offer.expires_at,
        max_bytes=offer.max_bytes,
    )
