"""What the CLI tests share: a stand-in API in place of the network, and reading what was sent."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from python_multipart.multipart import parse_options_header

from quire_client import Client
from quire_client.cli import commands
from tests.docx_factory import make_docx

Handler = TypeVar("Handler", bound=Callable[[httpx.Request], httpx.Response])


def use_stand_in(monkeypatch: pytest.MonkeyPatch, fake: Handler) -> Handler:
    """The CLI talks to ``fake`` instead of a server. The network, and only it, is replaced: the
    CLI builds its Client as it always does."""
    monkeypatch.setattr(
        commands, "Client", functools.partial(Client, transport=httpx.MockTransport(fake))
    )
    monkeypatch.delenv("QUIRE_SERVER", raising=False)
    monkeypatch.delenv("QUIRE_API_KEY", raising=False)
    return fake


def form_fields(request: httpx.Request) -> dict[str, str]:
    """The small parts of a multipart body by name (the zip part left out)."""
    _, options = parse_options_header(request.headers["content-type"])
    boundary = b"--" + options[b"boundary"]
    fields = {}
    for part in request.read().split(boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        if b"filename=" in head or b'name="' not in head:
            continue
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        fields[name] = body.removesuffix(b"\r\n").decode()
    return fields


def one_document_folder(tmp_path: Path) -> Path:
    """A folder holding one DOCX, a.docx."""
    root = tmp_path / "documents"
    root.mkdir()
    (root / "a.docx").write_bytes(make_docx("a"))
    return root
