"""Every API replica makes sure the bucket exists as it starts (app/main.py's lifespan): two
starting at once must both start, and so must one whose bucket lives outside us-east-1."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.storage.s3 import S3Store


def s3_store(endpoint: str, bucket: str, region: str) -> S3Store:
    return S3Store(
        bucket=bucket,
        endpoint_url=endpoint,
        public_endpoint_url=None,
        access_key="test",
        secret_key="test",
        region=region,
    )


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_the_bucket_is_made_in_the_stores_region(s3_endpoint: str, region: str) -> None:
    store = s3_store(s3_endpoint, f"quire-{uuid.uuid4().hex[:12]}", region)
    store.ensure_bucket()
    store.ensure_bucket()  # a second start finds it
    location = store.client.get_bucket_location(Bucket=store.bucket)["LocationConstraint"]
    assert (location or "us-east-1") == region


def test_a_replica_that_loses_the_race_to_make_the_bucket_starts_anyway(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside us-east-1 S3 (and MinIO everywhere) answers BucketAlreadyOwnedByYou to the
    # second of two creations; moto does so too.
    bucket = f"quire-{uuid.uuid4().hex[:12]}"
    store = s3_store(s3_endpoint, bucket, "eu-west-1")
    other_replica = s3_store(s3_endpoint, bucket, "eu-west-1")
    look = store.client.head_bucket

    def look_while_the_other_replica_makes_it(**kwargs: Any) -> Any:
        try:
            return look(**kwargs)  # not there yet
        finally:
            other_replica.ensure_bucket()

    monkeypatch.setattr(store.client, "head_bucket", look_while_the_other_replica_makes_it)
    store.ensure_bucket()
    assert store.client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
