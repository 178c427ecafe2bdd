"""S3 object store (MinIO, AWS, any S3-compatible server) through boto3."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.storage.base import ObjectNotFound, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CreateBucketConfigurationTypeDef

PART_SIZE = 8 * 1024 * 1024  # S3 needs parts of at least 5 MiB; memory holds one part at a time
READ_BLOCK = 4 * 1024 * 1024
URL_CACHE_SIZE = 50_000  # presigned URLs kept for reuse (about 30 MB at most)


def _client(
    endpoint_url: str | None, access_key: str | None, secret_key: str | None, region: str
) -> S3Client:
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # Recent botocore sends CRC checksum headers that some S3-compatible servers reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=20,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


@contextmanager
def _errors(key: str) -> Iterator[None]:
    """Map botocore's exceptions onto the store's own: missing, transient or permanent."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ObjectNotFound(key) from error
        raise StoreError(
            f"object store refused {key}: {code or status}",
            transient=status >= 500 or status in (0, 408, 429),
        ) from error
    except (BotoCoreError, Boto3Error) as error:
        # boto3's transfer helpers wrap the ClientError they met (S3UploadFailedError,
        # RetriesExceededError): all of these are worth trying again.
        raise StoreError(f"object store unreachable or failing ({key}): {error}") from error


class S3Writer:
    """A multipart upload fed as bytes arrive; small objects go up in one PUT on commit."""

    def __init__(self, client: S3Client, bucket: str, key: str, content_type: str) -> None:
        self.client, self.bucket, self.key, self.content_type = client, bucket, key, content_type
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.bytes_written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data
        self.bytes_written += len(data)
        if len(self.buffer) >= PART_SIZE:
            self._flush_part()

    def _flush_part(self) -> None:
        with _errors(self.key):
            if self.upload_id is None:
                created = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type
                )
                self.upload_id = created["UploadId"]
            number = len(self.parts) + 1
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=bytes(self.buffer),
            )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.buffer.clear()

    def commit(self) -> None:
        with _errors(self.key):
            if self.upload_id is None:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=bytes(self.buffer),
                    ContentType=self.content_type,
                )
                self.buffer.clear()
                return
            if self.buffer:
                self._flush_part()
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
            )

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            # Best effort: the retention sweep removes whatever is left of the job later.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )


class S3RangeReader(io.RawIOBase):
    """A seekable file over ranged GETs, so zipfile reads only the parts it needs."""

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        with _errors(key):
            self.length = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.position >= self.length or len(view) == 0:
            return 0
        end = min(self.position + len(view), self.length) - 1
        with _errors(self.key):
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}"
            )["Body"].read()
        view[: len(body)] = body
        self.position += len(body)
        return len(body)


class S3Store:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        public_endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.client = _client(endpoint_url, access_key, secret_key, region)
        # Presigned URLs sign the Host header, so URLs for clients must be signed for the host
        # clients reach (e.g. localhost:9000), not the one containers use (minio:9000).
        # Signing is local: this client never sends a request.
        self.signer = (
            _client(public_endpoint_url, access_key, secret_key, region)
            if public_endpoint_url
            else self.client
        )
        self._url_cache: OrderedDict[tuple[str, str, str, int], tuple[str, float]] = OrderedDict()
        self._url_lock = threading.Lock()

    def ensure_bucket(self) -> None:
        with _errors(self.bucket):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._create_bucket()

    def _create_bucket(self) -> None:
        try:
            if self.region == "us-east-1":
                self.client.create_bucket(Bucket=self.bucket)
            else:  # S3 refuses a bucket outside us-east-1 unless its region is named
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration=cast(
                        "CreateBucketConfigurationTypeDef", {"LocationConstraint": self.region}
                    ),
                )
        except ClientError as error:
            # Another API replica starting at the same moment made it since our look: S3 and
            # MinIO answer this to the loser of that race, and the bucket is there.
            if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def open_writer(self, key: str, content_type: str) -> S3Writer:
        return S3Writer(self.client, self.bucket, key, content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with _errors(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: str, content_type: str) -> None:
        with _errors(key):
            self.client.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def open_reader(self, key: str) -> BinaryIO:
        return io.BufferedReader(S3RangeReader(self.client, self.bucket, key), READ_BLOCK)

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with _errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from body.iter_chunks(chunk_size)

    def download_file(self, key: str, path: str) -> None:
        with _errors(key):
            self.client.download_file(self.bucket, key, path)

    def size(self, key: str) -> int:
        with _errors(key):
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        with _errors(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        with _errors(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"]

    def abort_unfinished_writes(self, prefix: str, idle_since: datetime) -> int:
        aborted = 0
        with _errors(prefix):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    key, upload_id = upload["Key"], upload["UploadId"]
                    # A slow client's upload started long ago but still adds parts: the last
                    # part's time tells it from one whose writer died.
                    last_written = upload["Initiated"]
                    for parts in self.client.get_paginator("list_parts").paginate(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    ):
                        for part in parts.get("Parts", []):
                            last_written = max(last_written, part["LastModified"])
                    if last_written >= idle_since:
                        continue
                    with contextlib.suppress(ClientError):  # ended meanwhile: nothing to do
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=upload_id
                        )
                        aborted += 1
        return aborted

    def presigned_get_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str:
        # boto3 takes about 0.15 ms to sign one URL: 1.5 s for the per-file links of a
        # 10,000-file job's status. A URL is reused while at least half its life is left.
        cache_key = (key, filename, content_type, expires_in)
        now = time.monotonic()
        with self._url_lock:
            cached = self._url_cache.get(cache_key)
            if cached is not None and cached[1] > now:
                return cached[0]
        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        url = self.signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=expires_in,
        )
        with self._url_lock:
            self._url_cache[cache_key] = (url, now + expires_in / 2)
            self._url_cache.move_to_end(cache_key)
            while len(self._url_cache) > URL_CACHE_SIZE:
                self._url_cache.popitem(last=False)
        return url

    def presigned_put_url(
        self, key: str, *, content_type: str, expires_in: int, max_bytes: int
    ) -> str:
        """A presigned PUT straight to the bucket. S3 cannot bound a presigned PUT's size, so
        ``max_bytes`` is enforced when the job is created from the object."""
        return self.signer.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_in,
        )

    def api_served_urls(self) -> None:
        return None  # presigned URLs go to the S3 server, which checks them

    def free_bytes(self) -> None:
        return None  # the server's space is its own concern

    def check(self) -> None:
        with _errors(self.bucket):
            self.client.head_bucket(Bucket=self.bucket)
