"""The CLI in front of a server that is not Quire, or not only Quire: a captive portal or a
misconfigured proxy answering 200 with an HTML page. Still one clean line, never a traceback;
and a job id is sent as one path segment, whatever it holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from quire_client.cli.commands import main
from quire_client.cli.errors import EXIT_ERROR


class Portal(BaseHTTPRequestHandler):
    """Answers every request with a 200 HTML page, and remembers the paths asked for."""

    paths: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.paths.append(self.path)
        body = b"<html><body>Please sign in to the Wi-Fi</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def portal() -> Iterator[str]:
    Portal.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_that_is_not_json_is_a_clean_error(
    portal: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "some-job", "--server", portal]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("quire: error: ") and "not a Quire answer" in err, err
    assert len(err.splitlines()) == 1

    source = tmp_path / "a.docx"
    source.write_bytes(b"PK\x05\x06" + bytes(18))
    out = tmp_path / "out.zip"
    assert main(["convert", str(source), "-o", str(out), "--server", portal]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("quire: error: ") and "not a Quire answer" in err, err
    assert not out.exists()


def test_a_job_id_is_one_path_segment(portal: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["status", "../../metrics?x=1", "--server", portal])
    capsys.readouterr()
    assert Portal.paths == ["/api/v1/jobs/..%2F..%2Fmetrics%3Fx%3D1"]
