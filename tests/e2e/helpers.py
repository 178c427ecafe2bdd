"""Helpers the end-to-end tests share: a test module imports them from here, never from
another test module (the fixtures and ``Service`` are in tests/e2e/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

# -- the service's settings --------------------------------------------------------------------


def embedded_env() -> dict[str, str]:
    return {"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "e2e-secret"}


def compose_like_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """PostgreSQL, an S3 server and a shared Redis: the shape of the docker compose stack."""
    from tests.conftest import _fresh_database

    return {
        **embedded_env(),
        "QUIRE_DATABASE_URL": _fresh_database(request.getfixturevalue("postgres_url"), "e2e"),
        "QUIRE_BROKER_URL": request.getfixturevalue("redis_url").replace("/0", "/5"),
        "QUIRE_STORAGE_BACKEND": "s3",
        "QUIRE_S3_ENDPOINT_URL": request.getfixturevalue("s3_endpoint"),
        "QUIRE_S3_BUCKET": "quire-e2e",
        "QUIRE_S3_ACCESS_KEY": "test",
        "QUIRE_S3_SECRET_KEY": "test",
    }


# -- proxies in front of the service -----------------------------------------------------------


class ForwardingProxy(BaseHTTPRequestHandler):
    """An HTTP proxy in front of the real service (the fake is at the network boundary only):
    subclasses refuse some requests themselves, or lose some answers on the way back."""

    upstream = ""

    def refused(self) -> bool:
        """Answer this request here instead of forwarding it; True if it was."""
        return False

    def answer_lost(self) -> bool:
        """Drop the service's answer to this request and close the connection."""
        return False

    def _forward(self) -> None:
        if self.refused():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = httpx.request(
            self.command, self.upstream + self.path, headers=headers, content=body, timeout=60
        )
        if self.answer_lost():
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("transfer-encoding", "content-encoding", "connection"):
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def proxy_to(upstream: str, kind: type[ForwardingProxy]) -> Iterator[str]:
    """Run a proxy of ``kind`` in front of ``upstream``; yields its URL."""
    handler = type("Handler", (kind,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class OldServerProxy(ForwardingProxy):
    """A server without direct uploads (404), behind a proxy that refuses event streams."""

    def refused(self) -> bool:
        if self.path == "/api/v1/uploads":
            self.send_error(404, "Not Found")
            return True
        if self.path.endswith("/events"):
            self.send_error(502, "no streams through this proxy")
            return True
        return False
