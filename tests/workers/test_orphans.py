"""What an upload leaves when the API dies receiving it is removed once idle past the grace;
what a job or a direct upload still names is kept."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from app.config import get_settings
from app.db import session_scope
from app.jobs import new_job_id
from app.models import Upload, utcnow
from app.storage import get_store, upload_key
from app.storage.s3 import PART_SIZE
from tests.app.helpers import make_job
from tests.conftest import Backend
from workers import orphans
from workers.orphans import remove_orphan_uploads


def test_orphan_uploads_are_removed_once_idle_past_the_grace(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = get_store()
    job_id, _ = make_job(1)
    store.put_bytes(upload_key(job_id), b"the job's", "application/zip")
    direct = new_job_id()  # offered, uploaded, not made a job yet
    with session_scope() as session:
        session.add(Upload(id=direct, max_bytes=10, expires_at=utcnow() + timedelta(hours=1)))
    store.put_bytes(upload_key(direct), b"direct", "application/zip")
    # The API died after the upload, before the job's transaction committed.
    unnamed = new_job_id()
    store.put_bytes(upload_key(unnamed), b"no job", "application/zip")
    # The API died mid-stream: a partial file, or an S3 multipart upload with one part.
    cut_off = new_job_id()
    dead_writer = store.open_writer(upload_key(cut_off), "application/zip")
    dead_writer.write(os.urandom(PART_SIZE + 1))

    assert remove_orphan_uploads(get_settings(), store) == 0  # all fresh: maybe live requests

    later = utcnow() + timedelta(seconds=get_settings().orphan_upload_grace + 60)
    monkeypatch.setattr(orphans, "utcnow", lambda: later)
    assert remove_orphan_uploads(get_settings(), store) == 2
    assert not store.exists(upload_key(unnamed))
    assert store.abort_unfinished_writes("uploads/", later) == 0  # the cut-off one is gone
    assert store.exists(upload_key(job_id))
    assert store.exists(upload_key(direct))
    assert sorted(key for key, _ in store.list_objects("uploads/")) == sorted(
        [upload_key(job_id), upload_key(direct)]
    )
    assert remove_orphan_uploads(get_settings(), store) == 0
    dead_writer.abort()  # only closes this test's file handle: there is nothing left to end
