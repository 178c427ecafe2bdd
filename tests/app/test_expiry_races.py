"""A finished job's time to live against a client's retry: once the job has expired, the
sweeper may be removing it, so a retry is refused instead of restarting a job that then
vanishes under its new round."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.models import Job
from app.storage import get_store
from tests.app.helpers import assert_error, finish, post_zip
from tests.conftest import SentTasks
from tests.docx_factory import make_zip
from tests.workers.helpers import age
from workers import sweeper
from workers.sweeper import expire


def _failed_job(client: TestClient, sent: SentTasks) -> str:
    """A job that ended FAILED (its one file is not a DOCX): retry would take it."""
    job_id = str(post_zip(client, make_zip({"bad.docx": b"not a docx"})).json()["job_id"])
    finish(job_id, sent)
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "FAILED"
    return job_id


def test_retry_of_an_expired_job_is_409(client: TestClient, sent: SentTasks) -> None:
    job_id = _failed_job(client, sent)
    age(job_id, get_settings().job_ttl + 60)
    assert_error(client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "QUIRE_JOB_TTL")
    assert expire(get_settings(), get_store()) == 1


def test_a_retry_after_the_sweeper_listed_the_job_does_not_restart_it(
    client: TestClient, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _failed_job(client, sent)
    age(job_id, get_settings().job_ttl + 60)
    listed = sweeper.transitions.expired_jobs
    answers: list[int] = []

    def listed_then_retried(session: Session, older_than: timedelta) -> list[str]:
        expired = listed(session, older_than)
        # The client retries between the sweeper's listing and its removal.
        answers.append(client.post(f"/api/v1/jobs/{job_id}/retry").status_code)
        return expired

    monkeypatch.setattr(sweeper.transitions, "expired_jobs", listed_then_retried)
    expire(get_settings(), get_store())
    # Either the retry lost (the job is gone as it expired) or it won and the job lives on:
    # never a 202 for a job that then disappears.
    with session_scope() as session:
        job = session.get(Job, job_id)
    assert answers == [409] and job is None
