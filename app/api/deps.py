"""Request-scoped dependencies, as ``Annotated`` aliases so routes stay short."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.config import Settings, get_settings
from app.db import session_scope
from app.storage import ObjectStore, get_store


def _session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit before the response is sent. With the default ("request") the commit
# runs after the client has its answer, and its next call (e.g. POST /api/v1/jobs right after
# POST /api/v1/uploads) could miss what the first one wrote.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


# The dependencies below never block, so they are coroutines: FastAPI runs plain functions in a
# thread of their own, a hop that costs more than the work (about 60 us each, per request).
async def _settings() -> Settings:
    return get_settings()


async def _store() -> ObjectStore:
    return get_store()


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(_store)]


async def base_url(request: Request, settings: SettingsDep) -> str:
    """Where clients reach this API: the configured public URL, or the request's own base."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]


def owner_of(api_key: str) -> str:
    """What a job records about the key that created it: a digest, never the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()


async def caller(request: Request, settings: SettingsDep) -> str:
    """The owner digest of the request's API key; "" when the server has no keys configured.

    401 without a bearer token, 403 for a token that is not one of the keys.
    """
    keys = settings.api_key_list
    if not keys:
        return ""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "This server needs an API key: send the header 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = token.strip()
    # Compare every key, in constant time each, so timing tells nothing about which one is near.
    matched = [key for key in keys if hmac.compare_digest(token.encode(), key.encode())]
    if not matched:
        raise ApiError(403, "This API key is not accepted by the server.")
    return owner_of(matched[0])


OwnerDep = Annotated[str, Depends(caller)]
