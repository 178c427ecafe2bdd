"""One error body for every failure: ``{"error": {"status", "code", "message"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from app.jobs import IdempotencyConflict
from app.logs import get_logger
from app.schemas import ErrorResponse
from app.services.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    OutOfSpace,
    QuotaExceeded,
    ServiceError,
)
from app.storage import StoreError
from app.zipinput import UploadRejected

log = get_logger("quire.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _code(status)
        self.headers = headers


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_response(
    status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"status": status, "code": code or _code(status), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


# What a 429 says besides its body: when asking again may succeed.
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (an estimate)",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route documents."""
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entries[status] = {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
        if status == 429:
            entries[status]["headers"] = RETRY_AFTER_HEADER
    return entries


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts at this path. Starlette names only the first matching
    route's methods, which is wrong where two routes share a path (GET and POST /api/v1/jobs)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


# The services' errors, by kind (app.services.errors); each subclass answers with its kind's.
SERVICE_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidRequest: 422,
    OutOfSpace: 507,
    QuotaExceeded: 429,
}


def service_status(error: ServiceError) -> int:
    for kind, status in SERVICE_STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(UploadRejected)
    async def _rejected(_: Request, exc: UploadRejected) -> JSONResponse:
        return error_response(exc.status_code, exc.message)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(service_status(exc), exc.message)

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(429, exc.message, "quota_exceeded", headers)

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return error_response(422, str(exc), "idempotency_key_reused")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return error_response(422, f"Invalid request: {problems}")

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        log.warning("api.store_unavailable", error=str(exc))
        return error_response(503, "The object store is unavailable; try again shortly.")

    @app.exception_handler(OperationalError)
    async def _database(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("api.database_unavailable", error=str(exc))
        return error_response(503, "The database is unavailable; try again shortly.")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled_error", extra={"path": request.url.path})
        return error_response(500, "Internal error; the server log has the details.")
