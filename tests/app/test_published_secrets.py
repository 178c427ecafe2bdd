"""Quire refuses to start with a secret that was ever published as a default (issue 12): the
compose file once fell back to them, and anyone can read them in the repository's history."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import KNOWN_PUBLIC_SECRETS, Settings


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("secret_key", "quire-dev-secret-change-me", "QUIRE_SECRET_KEY"),
        ("secret_key", "change-me-secret-key", "QUIRE_SECRET_KEY"),
        ("webhook_secret", "quire-dev-secret-change-me", "QUIRE_WEBHOOK_SECRET"),
        ("s3_secret_key", "quire-minio-secret", "QUIRE_S3_SECRET_KEY"),
        ("s3_secret_key", "minioadmin", "QUIRE_S3_SECRET_KEY"),
        ("s3_secret_key", "change-me-minio-secret", "QUIRE_S3_SECRET_KEY"),
        ("metrics_token", "change-me", "QUIRE_METRICS_TOKEN"),
        ("api_keys", "mine-1234, quire", "QUIRE_API_KEYS"),
        (
            "database_url",
            "postgresql+psycopg://quire:quire@postgres:5432/quire",
            "QUIRE_DATABASE_URL",
        ),
    ],
)
def test_a_published_default_secret_is_refused(field: str, value: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUIRE_SECRET_KEY", "quire-dev-secret-change-me")
    with pytest.raises(ValidationError, match="published default"):
        Settings()


def test_secrets_of_ones_own_are_accepted() -> None:
    settings = Settings(
        secret_key="3f9a0c1e5b7d",
        webhook_secret="whsec-81f2",
        s3_secret_key="app-pw-52b8d0e6aa",
        metrics_token="prom-7c1d",
        database_url="postgresql+psycopg://quire:pg-pw-0c4e@postgres:5432/quire",
    )
    assert settings.secret_key == "3f9a0c1e5b7d"
    assert "quire-dev-secret-change-me" in KNOWN_PUBLIC_SECRETS
