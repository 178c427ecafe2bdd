"""``GET /metrics``: Prometheus text format, outside /api/v1 (and so outside API-key auth).

Every figure is read at scrape time (``app.metrics``): job and file counts from the database,
queue depths and the workers' recorded events from Redis. A source that cannot be read is
reported as ``quire_metrics_source_up{source=...} 0`` and its figures left out: the scrape
itself still answers 200, so Prometheus keeps what it can get and the outage shows.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.metrics import QuireCollector

router = APIRouter(tags=["operations"])

# Only Quire's own figures: a per-process collector (memory, CPU of this one API process)
# would describe whichever replica answered, not the service.
registry = CollectorRegistry(auto_describe=False)
registry.register(QuireCollector())


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole deployment",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics() -> Response:
    # A plain def: FastAPI runs it in a thread, so the database and Redis reads never block
    # the event loop.
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
