"""The services' domain errors answer with one status per kind, and their message unchanged."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.errors import install_error_handlers
from app.services.errors import (
    ArchiveGone,
    Conflict,
    FileNotFound,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    NothingUploaded,
    NotReady,
    OutOfSpace,
    ServiceError,
    UploadAlreadyUsed,
    UploadClosed,
    UploadNotFound,
)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (JobNotFound("nope"), 404, "not_found"),
        (FileNotFound("no file"), 404, "not_found"),
        (UploadNotFound("u1"), 404, "not_found"),
        (ArchiveGone("gone"), 404, "not_found"),
        (UploadAlreadyUsed("u1", "u1"), 409, "conflict"),
        (NothingUploaded("u1"), 409, "conflict"),
        (UploadClosed(), 409, "conflict"),
        (JobNotRetryable("running"), 409, "conflict"),
        (JobNotCancellable("ended"), 409, "conflict"),
        (NotReady("not yet"), 409, "conflict"),
        (Conflict("any conflict"), 409, "conflict"),
        (InvalidRequest("Invalid request: x"), 422, "unprocessable_entity"),
        (OutOfSpace("disk full"), 507, "insufficient_storage"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_kind_of_domain_error_has_its_status(
    error: ServiceError, status: int, code: str
) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/")
    def fail() -> None:
        raise error

    response = TestClient(app).get("/")
    assert response.status_code == status
    assert response.json() == {"error": {"status": status, "code": code, "message": error.message}}
