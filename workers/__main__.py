"""``python -m workers``: the ``celery`` command, for Quire's worker and beat.

    python -m workers -A workers.celery_app:celery worker --loglevel INFO

The same command line as ``celery``, with one difference: Quire's package is imported first.
The ``celery`` command loads every installed Celery plugin before anything else (Flower's among
them), and that imports redis-py, which imports OpenTelemetry's SDK whenever it is installed;
``app/__init__.py`` refuses that import, but only if it runs first. So with tracing off a worker
loads no OpenTelemetry SDK at all (tests/app/test_tracing_off.py).
"""

import app  # noqa: F401, I001 - imported before Celery: see above
from celery.__main__ import main

main()
