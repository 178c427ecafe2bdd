"""``GET /metrics``: Prometheus text format, outside /api/v1 and its API keys.

While API keys are on (QUIRE_API_KEYS), it needs its own bearer token, QUIRE_METRICS_TOKEN: the
figures describe every client's work, and a scraper should not hold a client's key. With keys
and no token it answers 401 to everyone (the start-up log says so). Without keys it is open,
like the rest of the API on a trusted network.

Every figure is read at scrape time (``app.metrics``): job and file counts from the database,
queue depths and the workers' recorded events from Redis. A source that cannot be read is
reported as ``quire_metrics_source_up{source=...} 0`` and its figures left out: the scrape
itself still answers 200, so Prometheus keeps what it can get and the outage shows.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.api.deps import SettingsDep
from app.api.errors import ApiError, responses
from app.metrics import QuireCollector


async def metrics_access(request: Request, settings: SettingsDep) -> None:
    """401 unless the request may read /metrics (see the module's docstring)."""
    if not settings.api_key_list:
        return
    if not settings.metrics_token:
        raise ApiError(
            401,
            "Metrics are closed: this server has API keys and no QUIRE_METRICS_TOKEN.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.metrics_token.encode()
    ):
        raise ApiError(
            401,
            "Metrics need the header 'Authorization: Bearer <QUIRE_METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(tags=["operations"], dependencies=[Depends(metrics_access)])

# Only Quire's own figures: a per-process collector (memory, CPU of this one API process)
# would describe whichever replica answered, not the service.
registry = CollectorRegistry(auto_describe=False)
registry.register(QuireCollector())


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole deployment",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text",
        },
        **responses(401),
    },
)
def metrics() -> Response:
    # A plain def: FastAPI runs it in a thread, so the database and Redis reads never block
    # the event loop.
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
