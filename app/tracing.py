"""OpenTelemetry traces of a job's path through the API and the workers, when
``QUIRE_OTEL_ENDPOINT`` is set.

Off (the default), this module imports nothing of OpenTelemetry: ``span`` hands back one
shared do-nothing context manager and ``annotate`` returns at once, so the code that calls them
costs a function call. (FastAPI and redis-py import OpenTelemetry's API package on their own;
app/__init__.py keeps redis-py from loading the SDK's metrics too.)

On, each process exports its spans in batches over OTLP/HTTP to
``{QUIRE_OTEL_ENDPOINT}/v1/traces``, as the service ``quire-api`` or ``quire-worker``
(``QUIRE_OTEL_SERVICE_NAME`` is the prefix).

What makes one trace of a job: the FastAPI instrumentation opens the request's span; every task
message carries the context current when it was sent (W3C ``traceparent`` in the message
headers, ``_inject_context``); the Celery instrumentation in each worker process opens the
task's span as a child of it. Sends happen after commit (``app.db.session_scope``), inside the
span of the code that queued them, so ingest follows ``job.create``, each conversion follows
``job.ingest``, the archive follows the last file, and the webhook follows the archive.

A worker's pool processes configure tracing after the fork (``worker_process_init``): the
exporter's background thread does not survive a fork.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal, Protocol

from app.logs import get_logger

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from app.config import Settings

log = get_logger("quire.tracing")

AttributeValue = str | int | float | bool
Role = Literal["api", "worker"]


class SpanHandle(Protocol):
    """What the code does with an open span: add what it learnt along the way."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN: AbstractContextManager[SpanHandle] = nullcontext(_NoSpan())
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def traces_url(endpoint: str) -> str:
    """Where OTLP/HTTP takes spans, from the collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT
    is read: the signal's path is appended)."""
    return endpoint.rstrip("/") + "/v1/traces"


def configure_tracing(settings: Settings, role: Role) -> bool:
    """Export this process's spans when QUIRE_OTEL_ENDPOINT is set; True if tracing is on.

    Idempotent within a process. The provider is Quire's own, passed to the instrumentations,
    not installed as OpenTelemetry's global one."""
    global _provider, _tracer
    if not settings.otel_endpoint:
        return False
    if _provider is not None:
        return True
    # Imported here, and only here: with tracing off the SDK is never loaded (the test in
    # tests/app/test_tracing_off.py holds that).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service_name = f"{settings.otel_service_name}-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # Batched, in a background thread: a span's end only appends it to a queue. The delay and
    # batch sizes follow OpenTelemetry's own variables (OTEL_BSP_SCHEDULE_DELAY, ...).
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(settings.otel_endpoint)))
    )
    _provider = provider
    _tracer = provider.get_tracer("quire")
    log.info("tracing.on", service=service_name, endpoint=traces_url(settings.otel_endpoint))
    return True


def instrument_api(app: FastAPI, settings: Settings) -> None:
    """A span for each request, and the request's context on every task the API sends."""
    if not configure_tracing(settings, "api"):
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        # Probes and scrapes come every few seconds and tell nothing about a job.
        excluded_urls="/healthz,/readyz,/metrics",
        # One span per request, not one more per ASGI message received or sent.
        exclude_spans=["receive", "send"],
    )
    _propagate_on_publish()


def instrument_worker(settings: Settings) -> None:
    """In a worker's pool process, after the fork: a span for each task, a child of the
    context its message carried, and the context passed on to the tasks it sends."""
    if not configure_tracing(settings, "worker"):
        return
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=_provider)
    # The instrumentation's publish hooks open a span before a message is published and close
    # it after, but after_task_publish finds it only for a task registered in the sending
    # process (celery.registry). Quire sends by name (app.queue), so the span is ended, and its
    # context detached, only when CPython frees the hook's context manager, before the message
    # even leaves: a span that measures nothing, kept right by the garbage collector. Quire's
    # own hook, the same in the API and the workers, only injects the current context, which
    # is what crosses the broker; the task's span in the worker is its child.
    signals.before_task_publish.disconnect(instrumentor._trace_before_publish)
    signals.after_task_publish.disconnect(instrumentor._trace_after_publish)
    _propagate_on_publish()


def _propagate_on_publish() -> None:
    from celery import signals

    signals.before_task_publish.connect(_inject_context, weak=False)


def _inject_context(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Celery's protocol 2 puts the message headers on the worker's task.request, where the
    # Celery instrumentation extracts the parent from.
    if headers is not None:
        from opentelemetry.propagate import inject

        inject(headers)


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[SpanHandle]:
    """A span around the block, a child of the current one; a shared no-op when tracing is off.

    An exception leaving the block is recorded on the span and marks it as an error."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def annotate(**attributes: AttributeValue | None) -> None:
    """Add attributes to the current span (None values are left out); nothing when off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def shutdown_tracing() -> None:
    """Export what is still queued, then stop the exporter (a process's last act)."""
    global _provider, _tracer
    if _provider is None:
        return
    _provider.shutdown()
    _provider = _tracer = None
