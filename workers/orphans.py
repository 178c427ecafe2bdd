"""What an upload leaves in the store when the API dies while receiving it.

``POST /api/v1/jobs`` streams the body into the job's upload key (app/upload_stream.py) before
the job's row exists (app/services/submission.py creates it once the upload is complete). An API
process killed in between (the OOM killer, a SIGKILL, a host going down) leaves, depending on
when it died: a partial local file or an unfinished S3 multipart upload (mid-stream), or a whole
upload object that no job row names (after the upload, before the job's transaction
committed). The client got an error and will send again; nothing will ever read these. The
sweeper calls ``remove_orphan_uploads`` to remove them once they stayed idle past
QUIRE_ORPHAN_UPLOAD_GRACE.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.config import Settings
from app.db import session_scope
from app.logs import get_logger
from app.models import Job, Upload, utcnow
from app.storage import ObjectStore, job_prefixes

log = get_logger("quire.orphans")

UPLOADS_PREFIX = "uploads/"  # app.storage.upload_key: uploads/{job_id}/source.zip
ROWS_PER_QUERY = 500


def remove_orphan_uploads(settings: Settings, store: ObjectStore) -> int:
    """Remove upload objects idle longer than QUIRE_ORPHAN_UPLOAD_GRACE that belong to no job
    and no direct upload, and end the unfinished writes idle that long; returns how many.

    The grace is what keeps this from racing a live request: an upload being received is
    written to continuously, and one whose job is being created got its last byte moments ago.
    A direct upload keeps its ``uploads`` row until the transaction that makes its job, so its
    object always has one row or the other.
    """
    idle_since = utcnow() - timedelta(seconds=settings.orphan_upload_grace)
    removed = store.abort_unfinished_writes(UPLOADS_PREFIX, idle_since)
    if removed:
        log.warning("upload.unfinished_aborted", count=removed)
    candidates = sorted(
        {
            key.removeprefix(UPLOADS_PREFIX).split("/", 1)[0]
            for key, written in store.list_objects(UPLOADS_PREFIX)
            if written < idle_since
        }
    )
    for start in range(0, len(candidates), ROWS_PER_QUERY):
        ids = candidates[start : start + ROWS_PER_QUERY]
        with session_scope() as session:
            known = set(session.scalars(select(Job.id).where(Job.id.in_(ids))))
            known |= set(session.scalars(select(Upload.id).where(Upload.id.in_(ids))))
        for job_id in ids:
            if job_id in known:
                continue
            store.delete_prefix(job_prefixes(job_id)[0])
            log.warning("upload.orphan_removed", job_id=job_id)
            removed += 1
    return removed
