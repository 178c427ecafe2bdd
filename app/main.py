"""The FastAPI application: routers, error handlers, start-up checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import blobs, events, health, job_actions, jobs, uploads
from app.api import metrics as metrics_api
from app.api import web as web_page
from app.api.errors import install_error_handlers
from app.config import check_before_start, get_settings
from app.logs import JobIdMiddleware, configure_logging, get_logger
from app.memory import keep_freed_memory
from app.openapi import TAGS, install_openapi
from app.storage import S3Store, get_store
from app.tracing import instrument_api, shutdown_tracing

log = get_logger("quire.api")

DESCRIPTION = """
Quire converts DOCX files to PDF in bulk. Upload one zip of DOCX files, get a job id at once,
watch per-file progress, and download one zip of PDFs.

Every error answers with the same body: `{"error": {"status": 404, "code": "not_found",
"message": "..."}}`.
"""


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()  # refuses to start on invalid settings
    configure_logging(settings.log_level, settings.log_format)
    check_before_start(settings)  # e.g. a database shared by hosts and no QUIRE_SECRET_KEY
    if settings.api_key_list and not settings.metrics_token:
        log.warning(
            "metrics.closed",
            "QUIRE_API_KEYS is set and QUIRE_METRICS_TOKEN is not, so GET /metrics answers 401 "
            "to everyone; set QUIRE_METRICS_TOKEN to scrape it",
        )
    keep_freed_memory()  # uploads stream through in chunks: reuse their memory (#3)
    store = get_store()
    if isinstance(store, S3Store):
        store.ensure_bucket()
    yield
    shutdown_tracing()  # export the spans still queued before the process ends


def create_app() -> FastAPI:
    app = FastAPI(
        title="Quire",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # /docs and /redoc are served by app.api.web, from assets of Quire's own (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_openapi(app)  # the request bodies FastAPI cannot see, Quire's 422 body
    app.include_router(jobs.router)
    app.include_router(job_actions.router)  # retry, cancel, delete
    app.include_router(uploads.router)
    app.include_router(events.router)
    app.include_router(blobs.router)
    app.include_router(health.router)
    app.include_router(metrics_api.router)  # /metrics: outside /api/v1 and its API keys
    app.include_router(web_page.router)  # / and /static/: the web page, outside /api/v1 too
    app.add_middleware(JobIdMiddleware)  # binds a request's job id to its log lines
    instrument_api(app, get_settings())  # a span per request when QUIRE_OTEL_ENDPOINT is set
    return app


app = create_app()
