"""Quire: bulk DOCX to PDF conversion service (API and shared core)."""

import sys

# redis-py 8 imports the OpenTelemetry SDK's metrics when it is installed
# (redis/observability/providers.py), for an observability feature it runs only when asked to.
# Quire never asks, and its traces need no SDK metrics: marked absent before anything of Quire
# imports redis, so the API (uvicorn imports Quire first) loads none of the SDK with tracing
# off (app/tracing.py). The celery command imports redis before Quire (Flower's plugin), so the
# worker and beat run as `python -m workers`, which imports Quire first (workers/__main__.py).
sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
