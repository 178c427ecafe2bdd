"""Object storage behind one small interface: ``get_store()`` returns the configured one."""

from __future__ import annotations

from functools import lru_cache

from app.config import Settings, get_settings
from app.storage.base import (
    ApiServedUrls,
    ObjectNotFound,
    ObjectStore,
    ObjectWriter,
    StoreError,
    WriterScope,
    input_key,
    job_prefixes,
    merged_key,
    output_key,
    result_key,
    upload_key,
)
from app.storage.local import LocalStore
from app.storage.s3 import S3Store

__all__ = [
    "ApiServedUrls",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectWriter",
    "S3Store",
    "StoreError",
    "WriterScope",
    "build_store",
    "get_store",
    "input_key",
    "job_prefixes",
    "merged_key",
    "output_key",
    "result_key",
    "upload_key",
]


def build_store(settings: Settings) -> ObjectStore:
    if settings.storage_backend == "s3":
        return S3Store(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
        )
    return LocalStore(settings.resolved_local_store_dir, settings.resolved_secret_key())


@lru_cache
def get_store() -> ObjectStore:
    """One store (and one boto3 client with its connection pool) per process."""
    return build_store(get_settings())
