"""A callback URL that aims at the deployment itself is refused when the job is submitted.

Nothing here connects anywhere, and no name is looked up in DNS: hosts are address literals,
``localhost`` (answered by /etc/hosts) or names answered by a stub resolver.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app import callback_targets
from app.callback_targets import non_public_reason
from app.config import get_settings
from app.db import session_scope
from app.main import create_app
from app.models import Job
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx, make_zip
from tests.hostile_inputs_webhooks import ssrf_callback_urls

ZIP = "application/zip"


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the stub resolver answers (anything else does not resolve)."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ip_address(a).version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in answers[host]
        ]

    monkeypatch.setattr(callback_targets, "getaddrinfo", getaddrinfo)
    return answers


def submit(client: TestClient, callback_url: str) -> Any:
    data = make_zip({"a.docx": make_docx("A")})
    return client.post(
        "/api/v1/jobs", files={"file": ("b.zip", data, ZIP)}, data={"callback_url": callback_url}
    )


def job_count() -> int:
    with session_scope() as session:
        return int(session.execute(select(func.count()).select_from(Job)).scalar_one())


def test_every_hostile_callback_url_is_refused_with_422(client: TestClient) -> None:
    for url in ssrf_callback_urls():
        response = submit(client, url)
        assert response.status_code == 422, (url, response.text)
        message = response.json()["error"]["message"]
        assert "callback_url" in message and "not a public address" in message, (url, message)
    assert job_count() == 0


def test_the_same_urls_are_refused_in_a_json_submission(client: TestClient) -> None:
    response = client.post(
        "/api/v1/jobs",
        json={
            "upload_id": "00000000-0000-4000-8000-000000000000",
            "callback_url": "http://169.254.169.254/latest/meta-data/",
        },
    )
    assert response.status_code == 422, response.text
    assert "link-local" in response.json()["error"]["message"]


def test_a_name_that_resolves_to_a_private_address_is_refused(
    client: TestClient, resolver: dict[str, list[str]]
) -> None:
    resolver["internal.example.com"] = ["10.20.30.40"]
    resolver["mixed.example.com"] = ["93.184.215.14", "fd00::5"]
    for name, shown in (("internal.example.com", "10.20.30.40"), ("mixed.example.com", "fd00::5")):
        response = submit(client, f"https://{name}/hook")
        assert response.status_code == 422, response.text
        assert f"{name} (resolved to {shown}) is not a public address" in response.text
    assert job_count() == 0


def test_public_and_unresolvable_names_are_accepted(
    client: TestClient, resolver: dict[str, list[str]]
) -> None:
    # Unresolvable now may resolve later; each attempt checks again before it connects.
    resolver["hooks.example.com"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert submit(client, "https://hooks.example.com/quire").status_code == 202
    assert submit(client, "https://not-yet.example.com/quire").status_code == 202
    assert submit(client, "http://93.184.215.14:8080/quire").status_code == 202


def test_an_operator_may_allow_private_receivers(
    backend: Backend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIRE_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        assert submit(client, "http://127.0.0.1:9999/hook").status_code == 202
        assert submit(client, "http://10.0.0.8/hook").status_code == 202


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e"],
)
def test_public_addresses_are_public(address: str) -> None:
    assert non_public_reason(ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("100.100.0.1", "shared (carrier-grade NAT)"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "private"),  # ipaddress lists 240/4 as private as well as reserved
        ("::1", "loopback"),
        ("fd00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private, inside an IPv6 address"),
        ("64:ff9b::7f00:1", "loopback, inside an IPv6 address"),
    ],
)
def test_each_kind_of_non_public_address_is_named(address: str, reason: str) -> None:
    assert non_public_reason(ip_address(address)) == reason
