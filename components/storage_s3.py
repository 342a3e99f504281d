"""``s3://bucket/prefix`` artifact store over boto3 (AWS S3, MinIO, moto).

Endpoint and credentials come from the environment, as for every AWS tool:
the endpoint is the first of ``$AWS_ENDPOINT_URL_S3``, ``$AWS_ENDPOINT_URL``,
``$MLFLOW_S3_ENDPOINT_URL`` that is set (none = AWS itself); keys come from the
standard chain (``$AWS_ACCESS_KEY_ID`` / ``$AWS_SECRET_ACCESS_KEY``, profiles, roles).

Writes are visible-on-complete. Small objects go up in one PUT; files larger
than ``multipart_threshold_mb`` go up as a multipart upload that S3 only
exposes after ``CompleteMultipartUpload`` and that is aborted on any failure,
so a crash or an exception mid-upload never leaves a partial object behind a
key (a hard kill leaves an invisible, incomplete upload that a bucket lifecycle
rule or :meth:`S3Store.abort_stale_uploads` cleans up).

Every object carries its SHA-256 in the ``x-amz-meta-sha256`` header; reads
recompute it and raise :class:`ChecksumError` on mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from components.storage import (
    ArtifactStore,
    ChecksumError,
    StorageError,
    _check_key,
    checksum_check,
    sha256_bytes,
    sha256_file,
    stream_to_file,
)

ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
"""Environment variables read, in order, for the S3 endpoint URL."""
CHECKSUM_META = "sha256"
"""Object metadata key holding the hex SHA-256 of the content."""
MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest allowed multipart part (except the last)."""


def s3_endpoint_url() -> str | None:
    """The S3 endpoint URL from the environment (see ENDPOINT_ENV_VARS), or None for AWS."""
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def make_s3_client() -> Any:
    """A boto3 S3 client for the environment's endpoint, with retries on transient errors."""
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url(),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def _is_not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3Store(ArtifactStore):
    """Objects under ``s3://bucket/prefix``; see the module docstring for the guarantees."""

    def __init__(self, uri: str, *, multipart_threshold_mb: int = 64, client: Any | None = None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an s3:// URI: {uri!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        if multipart_threshold_mb * 1024 * 1024 < MIN_PART_BYTES:
            raise StorageError(f"multipart_threshold_mb must be >= 5 (got {multipart_threshold_mb})")
        self.part_bytes = multipart_threshold_mb * 1024 * 1024
        self.client = client if client is not None else make_s3_client()

    # -- keys -----------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def child(self, prefix: str) -> S3Store:
        return S3Store(
            f"{self.uri}/{_check_key(prefix.strip('/'))}",
            multipart_threshold_mb=self.part_bytes // (1024 * 1024),
            client=self.client,
        )

    # -- writes ---------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data,
                Metadata={CHECKSUM_META: sha256_bytes(data)},
            )
        except ClientError as exc:
            raise StorageError(f"cannot write {key!r} to {self.uri}: {exc}") from exc

    def put_file(self, key: str, local_path: str | Path) -> None:
        local_path = Path(local_path)
        size = local_path.stat().st_size
        digest = sha256_file(local_path)
        if size <= self.part_bytes:
            with open(local_path, "rb") as f:
                try:
                    self.client.put_object(
                        Bucket=self.bucket, Key=self._key(key), Body=f,
                        Metadata={CHECKSUM_META: digest},
                    )
                except ClientError as exc:
                    raise StorageError(f"cannot upload {key!r} to {self.uri}: {exc}") from exc
            return
        self._multipart_upload(self._key(key), local_path, digest)

    def _multipart_upload(self, s3_key: str, local_path: Path, digest: str) -> None:
        """Upload in ``part_bytes`` parts; the object appears only on complete; abort on failure."""
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=s3_key, Metadata={CHECKSUM_META: digest}
        )["UploadId"]
        try:
            parts = []
            with open(local_path, "rb") as f:
                for number, chunk in enumerate(iter(lambda: f.read(self.part_bytes), b""), start=1):
                    etag = self.client.upload_part(
                        Bucket=self.bucket, Key=s3_key, UploadId=upload_id,
                        PartNumber=number, Body=chunk,
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=s3_key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
            except ClientError:
                pass  # the original failure is the one worth reporting
            if isinstance(exc, ClientError):
                raise StorageError(f"multipart upload of {s3_key!r} failed: {exc}") from exc
            raise

    def abort_stale_uploads(self) -> int:
        """Abort every incomplete multipart upload under this prefix (e.g. after a hard kill)."""
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        uploads = listed.get("Uploads", [])
        for up in uploads:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
        return len(uploads)

    # -- reads ----------------------------------------------------------------------------------
    def _get(self, key: str) -> dict[str, Any]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise StorageError(f"no object {key!r} in {self.uri}") from None
            raise StorageError(f"cannot read {key!r} from {self.uri}: {exc}") from exc

    def read_bytes(self, key: str) -> bytes:
        obj = self._get(key)
        data = obj["Body"].read()
        expected = obj.get("Metadata", {}).get(CHECKSUM_META)
        if expected is not None and sha256_bytes(data) != expected:
            raise ChecksumError(f"checksum mismatch for {key!r} in {self.uri}")
        return data

    def get_file(self, key: str, local_path: str | Path) -> None:
        obj = self._get(key)
        expected = obj.get("Metadata", {}).get(CHECKSUM_META)
        stream_to_file(Path(local_path).resolve(), obj["Body"].iter_chunks(1 << 20),
                       before_replace=checksum_check(expected, key, self.uri))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise StorageError(f"cannot stat {key!r} in {self.uri}: {exc}") from exc

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                keys.extend(obj["Key"][len(base):] for obj in page.get("Contents", []))
        except ClientError as exc:
            raise StorageError(f"cannot list {self.uri}/{prefix}: {exc}") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            raise StorageError(f"cannot delete {key!r} from {self.uri}: {exc}") from exc
