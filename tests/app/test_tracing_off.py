"""Tracing off costs nothing: with QUIRE_OTEL_ENDPOINT unset, Quire imports nothing of
OpenTelemetry's SDK, exporter or instrumentations (app/tracing.py imports them only when on).

What others import, checked as precisely: FastAPI (0.165) imports the OpenTelemetry API package
for its native telemetry (off while no provider is configured), and redis-py imports the API's
metrics part, and the SDK's metrics whenever the SDK is installed. app/__init__.py keeps the
SDK's metrics out of any process that imports Quire before redis: the API under uvicorn, and
the worker under ``python -m workers`` (the ``celery`` command with Quire imported before its
plugins, whose Flower imports redis), hold no ``opentelemetry.sdk`` module at all.

Each process is a fresh interpreter, as in production. The API one builds the app with its
lifespan and submits a real job with a callback through it; its sends go to a real Redis and
are written down. The worker one runs its command line's start first, then what a pool
process runs: its start-up hook, the ingest, each conversion (fake converter), the archive and
the webhook attempt, as the messages ask, and its shutdown hook. Each prints the OpenTelemetry
modules it holds. The same two processes with the endpoint set are the control: the SDK is
loaded and the spans reach a receiver, so the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.otlp import OtlpReceiver

REPO = Path(__file__).resolve().parents[2]

# Both print, as their last line, the OpenTelemetry modules they hold and what they did.
API_PROCESS = """
import json, sys

from fastapi.testclient import TestClient

from app import queue
from app.config import get_settings
from app.migrate import upgrade
from tests.docx_factory import make_docx

messages = []
sender = queue.get_sender()
send_task = sender.send_task


def recording(name, args=None, **options):
    messages.append((name, list(args or [])))
    return send_task(name, args=args, **options)


sender.send_task = recording
upgrade(get_settings().resolved_database_url)

from app.main import create_app

with TestClient(create_app()) as api:
    documents = [(f"{n}.docx", make_docx(f"Page {n}"), "application/octet-stream") for n in (1, 2)]
    answer = api.post(
        "/api/v1/jobs",
        files=[("files", document) for document in documents],
        data={"callback_url": "http://127.0.0.1:9/hook"},
    )
    assert answer.status_code == 202, answer.text

print(json.dumps({
    "job_id": answer.json()["job_id"],
    "messages": messages,
    # A name mapped to None is one marked absent (app/__init__.py), not a module loaded.
    "modules": sorted(
        m for m, module in sys.modules.items() if m.startswith("opentelemetry") and module
    ),
}))
"""

WORKER_PROCESS = """
import json, runpy, sys

# What the worker's command, `python -m workers -A workers.celery_app:celery worker`, runs
# before the worker itself: Quire's package, then Celery's command line with its plugins.
argv, sys.argv = sys.argv, ["workers", "--version"]
try:
    runpy.run_module("workers", run_name="__main__")
except SystemExit:
    pass
assert "flower" in sys.modules, "the command line's plugins were not loaded"
sys.argv = argv

from app import queue
from app.config import get_settings
from app.storage import get_store

messages = json.loads(sys.argv[1])
sender = queue.get_sender()
send_task = sender.send_task


def recording(name, args=None, **options):
    messages.append((name, list(args or [])))
    return send_task(name, args=args, **options)


sender.send_task = recording

from workers import celery_app, tasks
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import FakeConverter
from workers.webhooks import deliver

celery_app._process_init()  # what worker_process_init runs in each pool process
settings, store, converter = get_settings(), get_store(), FakeConverter()
run = {
    queue.INGEST_TASK: lambda job_id: ingest_job(job_id, store, settings),
    queue.CONVERT_TASK: lambda file_id: convert_file(file_id, store, converter, settings),
    queue.ARCHIVE_TASK: lambda job_id: build_archive(job_id, store),
    queue.WEBHOOK_TASK: lambda delivery_id: deliver(delivery_id, settings),
}
done = []
while messages:
    name, args = messages.pop(0)
    run[name](*args)
    done.append(name)
celery_app._process_shutdown()  # what worker_process_shutdown runs

from app.db import session_scope
from app.models import Job

with session_scope() as session:
    status = session.query(Job).one().status.value
print(json.dumps({
    "status": status,
    "ran": sorted(set(done)),
    # A name mapped to None is one marked absent (app/__init__.py), not a module loaded.
    "modules": sorted(
        m for m, module in sys.modules.items() if m.startswith("opentelemetry") and module
    ),
}))
"""


def run(script: str, tmp_path: Path, redis_url: str, *args: str, **env: str) -> dict[str, Any]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QUIRE_", "OTEL_"))},
        "QUIRE_DATA_DIR": str(tmp_path / "data"),
        "QUIRE_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/7",
        "QUIRE_SECRET_KEY": "test-secret",
        "QUIRE_CONVERTER": "fake",
        "QUIRE_WEBHOOK_ALLOW_PRIVATE": "true",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def run_job(tmp_path: Path, redis_url: str, **env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One job through an API process, then through a worker process; their reports."""
    api = run(API_PROCESS, tmp_path, redis_url, **env)
    worker = run(WORKER_PROCESS, tmp_path, redis_url, json.dumps(api["messages"]), **env)
    assert [name for name, _ in api["messages"]] == ["quire.ingest"]
    assert worker["status"] == "COMPLETED", worker
    assert worker["ran"] == ["quire.archive", "quire.convert", "quire.ingest", "quire.webhook"]
    return api, worker


# What tracing on loads: none of it may be there with tracing off.
TRACING_SIDE = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "opentelemetry.proto",
)


def test_with_tracing_off_the_sdk_is_never_imported(tmp_path: Path, redis_url: str) -> None:
    api, worker = run_job(tmp_path, redis_url)
    for report in (api, worker):
        assert [m for m in report["modules"] if m.startswith("opentelemetry.sdk")] == []
        assert [m for m in report["modules"] if m.startswith(TRACING_SIDE)] == []


def test_with_tracing_on_the_same_processes_load_the_sdk_and_export(
    tmp_path: Path, redis_url: str
) -> None:
    collector = OtlpReceiver()
    collector.start()
    try:
        api, worker = run_job(tmp_path, redis_url, QUIRE_OTEL_ENDPOINT=collector.endpoint)
    finally:
        collector.stop()
    for report in (api, worker):
        assert "opentelemetry.sdk.trace" in report["modules"]
    assert "opentelemetry.instrumentation.fastapi" in api["modules"]
    assert "opentelemetry.instrumentation.celery" in worker["modules"]
    # Each process exported its spans at shutdown, before it ended.
    names = {(span.service, span.name) for span in collector.snapshot()}
    assert {("quire-api", "job.create"), ("quire-api", "POST /api/v1/jobs")} <= names
    for name in ("job.ingest", "file.convert", "job.archive", "webhook.deliver"):
        assert ("quire-worker", name) in names
