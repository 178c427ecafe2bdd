"""Liveness (the process answers) and readiness (its dependencies answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.errors import error_response, responses
from app.db import check_database
from app.logs import get_logger
from app.queue import check_broker
from app.schemas import Health
from app.storage import get_store

log = get_logger("quire.api")
router = APIRouter(tags=["health"])
CHECK_TIMEOUT = 5


def _broker() -> None:
    check_broker(CHECK_TIMEOUT)


def _store() -> None:
    get_store().check()


@router.get("/healthz", response_model=Health, operation_id="healthz", summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    operation_id="readyz",
    responses=responses(503),
    summary="Database, broker and object store are reachable",
)
async def readyz() -> Health | JSONResponse:
    checks: dict[str, str] = {}
    for name, probe in (("database", check_database), ("broker", _broker), ("store", _store)):
        try:
            await asyncio.wait_for(run_in_threadpool(probe), CHECK_TIMEOUT + 1)
            checks[name] = "ok"
        except Exception as error:  # noqa: BLE001 - any failure means "not ready"; it is logged
            # The answer names the dependency only: an exception's text can carry host names,
            # ports and credentials-bearing URLs, and /readyz answers without a key.
            checks[name] = "down"
            log.warning("readyz.down", dependency=name, error=error)
    if all(value == "ok" for value in checks.values()):
        return Health(status="ok", checks=checks)
    failing = ", ".join(f"{name} {value}" for name, value in checks.items())
    return error_response(503, f"Not ready: {failing}")
