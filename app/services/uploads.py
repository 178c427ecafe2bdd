"""Direct uploads: a presigned URL to PUT a zip to, and whether that upload is still open.

The client asks for an upload, PUTs the zip straight to the store, then makes the job with
``POST /api/v1/jobs {"upload_id": ...}`` (``app.services.submission``): the upload's id becomes
the job's id, so the object is already where the job's ingest reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.config import Settings
from app.db import session_scope
from app.jobs import new_job_id
from app.models import Upload, utcnow
from app.storage import ObjectStore, upload_key
from app.zipinput import UploadRejected

UPLOAD_CONTENT_TYPE = "application/zip"


@dataclass(frozen=True)
class Offer:
    upload_id: str
    url: str  # may be relative to the API's base URL (the local store's)
    expires_at: datetime
    max_bytes: int


def offer_upload(owner: str, size: int | None, store: ObjectStore, settings: Settings) -> Offer:
    """Record a new upload and sign the URL its zip is PUT to; UploadRejected (413) at once
    when the announced ``size`` is past the limit."""
    max_bytes = settings.max_upload_bytes
    if size is not None and size > max_bytes:
        raise UploadRejected(413, f"The upload is larger than the limit of {max_bytes} bytes.")
    upload_id = new_job_id()
    ttl = settings.presigned_url_ttl
    expires_at = utcnow() + timedelta(seconds=ttl)
    with session_scope() as session:
        session.add(Upload(id=upload_id, owner=owner, max_bytes=max_bytes, expires_at=expires_at))
        url = store.presigned_put_url(
            upload_key(upload_id),
            content_type=UPLOAD_CONTENT_TYPE,
            expires_in=ttl,
            max_bytes=max_bytes,
        )
    return Offer(upload_id, url, expires_at, max_bytes)


def accepts_put(key: str) -> bool:
    """Whether the direct upload this key belongs to can still take a PUT: its row goes when
    it is made a job (the object is that job's input from then on) or expires and is removed."""
    parts = key.split("/")
    if len(parts) != 3 or key != upload_key(parts[1]):
        return True  # not a direct upload's object (none is signed today)
    with session_scope() as session:
        return session.get(Upload, parts[1]) is not None
