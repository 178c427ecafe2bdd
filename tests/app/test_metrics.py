"""GET /metrics: what the workers record in Redis and what the database holds, read at scrape.

Real Redis, real database and store (both backends), real LibreOffice: the conversions run
through the pipeline's own functions, as a worker runs them; only the broker's deliveries are
captured (the ``sent`` fixture) and replayed by the test.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from app import metrics, queue
from app.api import metrics as metrics_api
from app.config import get_settings
from app.db import get_engine, session_scope
from app.models import Job
from app.storage import get_store
from tests.conftest import Backend, SentTasks, reset_caches
from tests.docx_factory import make_docx, make_zip
from tests.services import free_port
from tests.workers.helpers import files_by_name, run_to_the_end, submit
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice.uno import UnoConverter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> UnoConverter:
    return module_converter


@pytest.fixture
def metrics_client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    # These tests follow the counts from one scrape to the next: no cache window between them
    # (test_two_scrapes_within_the_window_run_one_query covers it).
    monkeypatch.setattr(metrics, "DATABASE_CACHE_SECONDS", 0.0)
    # The real router on an app of its own: /metrics needs nothing else of the API.
    app = FastAPI()
    app.include_router(metrics_api.router)
    return TestClient(app)


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_good_and_a_bad_document_move_the_counters_and_histograms(
    backend: Backend, sent: SentTasks, converter: UnoConverter, metrics_client: TestClient
) -> None:
    before = scrape(metrics_client)
    job_id = submit(make_zip({"good.docx": make_docx("Fine"), "bad.docx": b"plain text"}))
    queued = scrape(metrics_client)
    assert value(queued, "quire_jobs", status="PENDING") == 1
    assert value(queued, "quire_files", status="PENDING") == 2

    run_to_the_end(job_id, sent, converter)
    after = scrape(metrics_client)

    assert moved(before, after, "quire_conversions_total", outcome="completed") == 1
    assert moved(before, after, "quire_conversions_total", outcome="failed") == 1
    assert moved(before, after, "quire_conversion_failures_total", reason="invalid_document") == 1
    assert moved(before, after, "quire_conversion_failures_total", reason="timeout") == 0
    duration = "quire_conversion_duration_seconds"
    for outcome in ("completed", "failed"):
        assert moved(before, after, f"{duration}_count", outcome=outcome) == 1
        assert moved(before, after, f"{duration}_sum", outcome=outcome) > 0
        assert moved(before, after, f"{duration}_bucket", outcome=outcome, le="+Inf") == 1
    # The good file went through LibreOffice, the bad one stopped at validation: both under
    # a minute, and the bad one faster than LibreOffice's start alone.
    assert moved(before, after, f"{duration}_bucket", outcome="completed", le="60.0") == 1
    assert moved(before, after, f"{duration}_bucket", outcome="failed", le="0.5") == 1

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.result_bytes
        result_bytes = job.result_bytes
    assert moved(before, after, "quire_archive_bytes_count") == 1
    assert moved(before, after, "quire_archive_bytes_sum") == result_bytes
    assert moved(before, after, "quire_archive_duration_seconds_count") == 1

    # Counts by status come from this backend's fresh database, not from Redis.
    assert value(after, "quire_jobs", status="COMPLETED") == 1
    assert value(after, "quire_jobs", status="PENDING") == 0
    assert value(after, "quire_files", status="COMPLETED") == 1
    assert value(after, "quire_files", status="FAILED") == 1
    assert value(after, "quire_metrics_source_up", source="database") == 1
    assert value(after, "quire_metrics_source_up", source="redis") == 1


def test_a_forced_timeout_counts_timeouts_and_the_restart_after_it(
    backend: Backend,
    sent: SentTasks,
    converter: UnoConverter,
    metrics_client: TestClient,
    tmp_path: Path,
) -> None:
    job_id = submit(make_zip({"slow.docx": make_docx(*(f"Page {n}" for n in range(40)))}))
    ingest_job(job_id, get_store(), get_settings())
    (file_id,) = sent.conversions
    # A limit no conversion can meet (the setting itself refuses under 1 s, hence the copy):
    # LibreOffice is killed, the conversion retried once on a fresh instance and killed again.
    impatient = get_settings().model_copy(update={"conversion_timeout": 0.001})
    before = scrape(metrics_client)
    convert_file(file_id, get_store(), converter, impatient)
    after = scrape(metrics_client)

    assert files_by_name(job_id)["slow.docx"].error_message == (
        "LibreOffice did not finish within 0.001 seconds and was stopped."
    )
    assert moved(before, after, "quire_libreoffice_timeouts_total") == 2
    assert moved(before, after, "quire_conversion_failures_total", reason="timeout") == 1
    assert moved(before, after, "quire_conversions_total", outcome="failed") == 1
    # The retry started a fresh instance after the first kill; the next conversion another.
    assert moved(before, after, "quire_libreoffice_restarts_total", reason="replaced") == 1
    (tmp_path / "next.docx").write_bytes(make_docx("Next"))
    converter.convert(tmp_path / "next.docx", tmp_path / "next.pdf", 60)
    assert (
        moved(after, scrape(metrics_client), "quire_libreoffice_restarts_total", reason="replaced")
        == 1
    )


def test_recycling_counts_as_a_recycled_restart(
    backend: Backend, metrics_client: TestClient, tmp_path: Path
) -> None:
    source = tmp_path / "a.docx"
    source.write_bytes(make_docx("Recycled"))
    recycling = UnoConverter(
        soffice="soffice", profile_root=tmp_path / "profiles", start_timeout=60, restart_after=1
    )
    try:
        before = scrape(metrics_client)
        recycling.convert(source, tmp_path / "1.pdf", 60)
        recycling.convert(source, tmp_path / "2.pdf", 60)
        after = scrape(metrics_client)
    finally:
        recycling.close()
    assert moved(before, after, "quire_libreoffice_restarts_total", reason="recycled") == 1
    assert moved(before, after, "quire_libreoffice_restarts_total", reason="replaced") == 0


def test_queue_depths_are_read_from_the_broker(
    backend: Backend, metrics_client: TestClient
) -> None:
    try:
        before = scrape(metrics_client)
        queue.send_conversions(["f1", "f2", "f3"])  # the real send, into the real Redis
        queue.send_archive("j1")
        after = scrape(metrics_client)
    finally:
        with queue.get_sender().connection_for_write() as connection:
            for name in (queue.CONVERT_QUEUE, queue.CONTROL_QUEUE):
                connection.default_channel.queue_purge(name)  # every priority's list
    assert moved(before, after, "quire_queue_messages", queue="quire-convert") == 3
    assert moved(before, after, "quire_queue_messages", queue="quire-control") == 1
    assert value(after, "quire_queue_unacked_messages") >= 0


def test_the_exposition_is_valid_prometheus_text(
    backend: Backend, metrics_client: TestClient
) -> None:
    text = metrics_client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    expected = {
        "quire_jobs": "gauge",
        "quire_files": "gauge",
        "quire_files_waiting": "gauge",
        "quire_files_in_flight": "gauge",
        "quire_key_files_waiting": "gauge",
        "quire_key_files_in_flight": "gauge",
        "quire_queue_messages": "gauge",
        "quire_queue_unacked_messages": "gauge",
        "quire_conversions": "counter",
        "quire_conversion_failures": "counter",
        "quire_conversion_duration_seconds": "histogram",
        "quire_libreoffice_restarts": "counter",
        "quire_libreoffice_timeouts": "counter",
        "quire_archive_bytes": "histogram",
        "quire_archive_duration_seconds": "histogram",
        "quire_task_retries": "counter",
        "quire_task_failures": "counter",
        "quire_metrics_source_up": "gauge",
    }
    assert {name: family.type for name, family in families.items()} == expected
    assert all(family.documentation for family in families.values())
    # Known label values are there before anything happened, so rate() has a series at once.
    reasons = {s.labels["reason"] for s in families["quire_conversion_failures"].samples}
    assert set(metrics.FAILURE_REASONS) <= reasons
    statuses = {s.labels["status"] for s in families["quire_files"].samples}
    assert {"PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"} <= statuses
    # Histogram buckets are cumulative and end with +Inf equal to the count.
    for sample_family in ("quire_conversion_duration_seconds", "quire_archive_bytes"):
        samples = families[sample_family].samples
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        counts = [s.value for s in buckets if s.labels.get("outcome", "failed") == "failed"]
        assert counts == sorted(counts)
        assert buckets[-1].labels["le"] == "+Inf"


@pytest.fixture
def unreachable_redis(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("QUIRE_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    reset_caches()
    yield
    metrics._connection.paused_until = 0.0  # recording resumes for the tests that follow


def test_recording_without_redis_never_raises_nor_waits(unreachable_redis: None) -> None:
    from workers import metrics as worker_metrics

    started = time.monotonic()
    worker_metrics.conversion_finished(0.2, None)  # refused at once: nothing listens
    for _ in range(100):  # paused after the first failure: no more attempts
        worker_metrics.libreoffice_timed_out()
    assert time.monotonic() - started < 2 * metrics.TIMEOUT + 0.5
    assert metrics._connection.paused_until > time.monotonic()


def test_a_redis_that_never_answers_costs_one_short_timeout(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listening socket nobody reads: connections are accepted (by the kernel), commands
    # are never answered, as with a Redis that hangs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("QUIRE_BROKER_URL", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        reset_caches()
        try:
            started = time.monotonic()
            metrics.record(metrics.inc(metrics.LIBREOFFICE_TIMEOUTS))
            elapsed = time.monotonic() - started
        finally:
            metrics._connection.paused_until = 0.0
    assert metrics.TIMEOUT <= elapsed < 2 * metrics.TIMEOUT + 0.2  # no retries with backoff


def test_a_scrape_without_redis_still_answers_with_the_database_figures(
    unreachable_redis: None, metrics_client: TestClient
) -> None:
    samples = scrape(metrics_client)
    assert value(samples, "quire_metrics_source_up", source="redis") == 0
    assert value(samples, "quire_metrics_source_up", source="database") == 1
    assert value(samples, "quire_jobs", status="PENDING") == 0
    assert not any(name.startswith("quire_conversions") for name, _ in samples)


def test_metrics_are_open_without_api_keys(backend: Backend) -> None:
    from app.main import create_app

    with TestClient(create_app()) as api:
        assert api.get("/metrics").status_code == 200


def test_with_api_keys_metrics_need_their_own_token(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.main import create_app

    monkeypatch.setenv("QUIRE_API_KEYS", "client-key")
    monkeypatch.setenv("QUIRE_METRICS_TOKEN", "scraper-token")
    reset_caches()
    with TestClient(create_app()) as api:
        assert api.get("/metrics").status_code == 401
        assert api.get("/metrics").headers["www-authenticate"] == "Bearer"
        for wrong in (
            "Bearer client-key",
            "Bearer scraper",
            "Basic scraper-token",
            "scraper-token",
        ):
            assert api.get("/metrics", headers={"Authorization": wrong}).status_code == 401
        response = api.get("/metrics", headers={"Authorization": "Bearer scraper-token"})
    assert response.status_code == 200
    assert "quire_jobs" in response.text


def test_with_api_keys_and_no_token_metrics_are_closed_and_the_log_says_why(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.main import create_app

    monkeypatch.setenv("QUIRE_API_KEYS", "client-key")
    reset_caches()
    with caplog.at_level(logging.WARNING, logger="quire.api"), TestClient(create_app()) as api:
        response = api.get("/metrics", headers={"Authorization": "Bearer client-key"})
    assert response.status_code == 401
    assert "QUIRE_METRICS_TOKEN" in response.json()["error"]["message"]
    assert "metrics.closed" in caplog.text and "QUIRE_METRICS_TOKEN" in caplog.text


def test_two_scrapes_within_the_window_run_one_query(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "DATABASE_CACHE_SECONDS", 30.0)
    app = FastAPI()
    app.include_router(metrics_api.router)
    client = TestClient(app)
    queries: list[str] = []

    def count(*args: object) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            queries.append(str(args[2]))

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        first = scrape(client)
        per_scrape = len(queries)
        # Jobs and files by status, waiting files by key, the files in flight (none: so no
        # second query for their jobs' keys).
        assert per_scrape == 4
        submit(make_zip({"a.docx": make_docx("A")}))
        second = scrape(client)  # within the window: the first answer again, no query
        assert len(queries) == per_scrape
        assert value(second, "quire_jobs", status="PENDING") == value(
            first, "quire_jobs", status="PENDING"
        )
        monkeypatch.setattr(metrics, "DATABASE_CACHE_SECONDS", 0.0)  # the window has passed
        third = scrape(client)  # read afresh
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    assert len(queries) == 2 * per_scrape
    assert (
        value(third, "quire_jobs", status="PENDING")
        == value(first, "quire_jobs", status="PENDING") + 1
    )
