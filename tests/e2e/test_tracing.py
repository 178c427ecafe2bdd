"""OpenTelemetry traces across the real API and worker processes (issue #14, item 5).

The service runs as ``make run`` runs it, with QUIRE_OTEL_ENDPOINT pointing at an OTLP/HTTP
receiver on 127.0.0.1 (tests/e2e/otlp.py). One real job (two DOCX files and a broken one, with
a callback to a local receiver) must yield one trace holding the POST, the job's creation, the
ingest, each conversion with its file id and outcome, the archive and the webhook delivery,
from both processes, each span's parent among them: the context crossed the broker at every
send, and no span was left unended (a parent that never arrives would show it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.docx_factory import make_docx
from tests.e2e.conftest import Service
from tests.e2e.helpers import embedded_env
from tests.e2e.otlp import OtlpReceiver, ReceivedSpan, dump
from tests.workers.webhook_helpers import Receiver

pytestmark = pytest.mark.e2e

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


def named(spans: list[ReceivedSpan], name: str, **attributes: object) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]


def test_one_job_is_one_trace_across_api_and_workers(
    make_service: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    collector, callbacks = OtlpReceiver(), Receiver()
    collector.start()
    callbacks.start()
    try:
        service = make_service(
            {
                **embedded_env(),
                "QUIRE_OTEL_ENDPOINT": collector.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms between exports (default 5 s)
                "QUIRE_WEBHOOK_ALLOW_PRIVATE": "true",  # the callback receiver is on 127.0.0.1
            }
        )
        service.start()
        documents = {
            "one.docx": make_docx("First"),
            "two.docx": make_docx("Second", "Third"),
            "broken.docx": b"not a docx at all",
        }
        created = httpx.post(
            f"{service.url}/api/v1/jobs",
            files=[
                ("files", (name, data, "application/octet-stream"))
                for name, data in documents.items()
            ],
            data={"callback_url": callbacks.url},
            timeout=60,
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        status = service.wait_for_job(job_id)
        assert status["status"] == "COMPLETED", status
        files = {f["filename"]: f for f in status["files"]}  # type: ignore[attr-defined]
        file_ids = {name: f["file_id"] for name, f in files.items()}

        # The callback's span ends after the receiver answered: wait for the span, not the call.
        spans = collector.wait_for(
            lambda spans: bool(named(spans, "webhook.deliver", job_id=job_id, outcome="delivered"))
        )
        assert len(callbacks.requests) == 1
        assert service.stop() == 0
    finally:
        callbacks.stop()
        collector.stop()
    # Everything the processes still held was exported at their shutdown.
    spans = collector.snapshot()
    dump(spans, tmp_path / "spans.json")
    if os.environ.get("QUIRE_TRACE_SPANS_OUT"):  # for infra/trace_waterfall.py (docs/tracing.md)
        shutil.copy(tmp_path / "spans.json", os.environ["QUIRE_TRACE_SPANS_OUT"])

    [create] = named(spans, "job.create", job_id=job_id)
    assert create.service == "quire-api" and create.attributes["file_count"] == 3
    trace = [s for s in spans if s.trace_id == create.trace_id]
    by_id = {s.span_id: s for s in trace}

    def parent(span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_span_id in by_id, f"{span.name}'s parent was never exported"
        return by_id[span.parent_span_id]

    # The request: the FastAPI instrumentation's server span is the trace's root.
    [post] = [s for s in trace if s.kind == SERVER_KIND and s.name == "POST /api/v1/jobs"]
    assert post.parent_span_id == "" and post.service == "quire-api"
    assert post in _ancestors_of(create, by_id)

    # Ingest: its task span's parent is job.create, from which the message was sent.
    [ingest] = named(trace, "job.ingest", job_id=job_id)
    assert ingest.service == "quire-worker" and ingest.attributes["file_count"] == 3
    assert parent(ingest).name == "run/quire.ingest" and parent(parent(ingest)) == create

    # Each conversion: a child of the ingest that sent it, with its ids and its outcome.
    converts = named(trace, "file.convert")
    assert sorted(s.attributes["file_id"] for s in converts) == sorted(file_ids.values())
    for name, file_id in file_ids.items():
        [convert] = named(converts, "file.convert", file_id=file_id)
        assert convert.service == "quire-worker" and convert.attributes["job_id"] == job_id
        assert parent(convert).name == "run/quire.convert" and parent(parent(convert)) == ingest
        if name == "broken.docx":
            assert convert.attributes["outcome"] == "failed", convert.attributes
            assert convert.attributes["reason"] and convert.attributes["error"]
        else:
            assert convert.attributes["outcome"] == "completed", convert.attributes
            assert "reason" not in convert.attributes

    # The archive: sent by the last file's conversion, in the transaction that recorded it.
    [archive] = named(trace, "job.archive", job_id=job_id)
    assert archive.attributes["outcome"] == "completed" and archive.attributes["pdfs"] == 2
    assert parent(archive).name == "run/quire.archive" and parent(parent(archive)) in converts

    # The webhook: sent by the archive, in the transaction that completed the job.
    [deliver] = named(trace, "webhook.deliver", job_id=job_id)
    assert deliver.attributes["outcome"] == "delivered" and deliver.attributes["status_code"] == 200
    assert deliver.attributes["delivery_id"]
    assert parent(deliver).name == "run/quire.webhook" and parent(parent(deliver)) == archive

    # One trace, two processes, every parent present, nothing marked as an error.
    assert {s.service for s in trace} == {"quire-api", "quire-worker"}
    for span in trace:
        if span.parent_span_id:
            parent(span)
    assert [s.name for s in trace if s.status_code == ERROR] == []


def _ancestors_of(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    found = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        found.append(span)
    return found
