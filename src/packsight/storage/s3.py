"""S3 storage through boto3, with S3's errors translated into storage errors and outages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError

from packsight.storage.base import (
    BucketNotFoundError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageUnavailableError,
)
from packsight.storage.keys import validate_bucket, validate_key, validate_prefix

# S3 error codes that mean "the server is busy or unwell", whatever the HTTP status says.
_RETRYABLE_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(exc: Exception) -> StorageUnavailableError | None:
    """The transient error `exc` stands for, if it is one."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = _code(exc)
        # 501/505: the server will never do what was asked (an unsupported feature), however
        # long one waits.
        if (status < 500 or status in (501, 505)) and code not in _RETRYABLE_CODES:
            return None
        return StorageUnavailableError(f"object storage unavailable ({code or status})")
    outage = (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError)
    if isinstance(exc, (*outage, TimeoutError)):
        # Connection refused/reset, timeouts, truncated reads: the endpoint is down or flaky
        # (missing credentials and other botocore errors are not: retrying cannot fix them).
        return StorageUnavailableError(f"object storage unavailable ({type(exc).__name__})")
    if isinstance(exc, RetriesExceededError):  # a download that kept breaking off
        return StorageUnavailableError("object storage unavailable (download kept failing)")
    return None


@contextmanager
def _s3_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Translate boto3's errors: S3's several spellings of "no such key/bucket" into
    ObjectNotFoundError/BucketNotFoundError, outages into StorageUnavailableError."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
            raise BucketNotFoundError(f"bucket {bucket!r} does not exist") from exc
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ObjectNotFoundError(f"object {key!r} not found in bucket {bucket!r}") from exc
        unavailable = _unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc
    except Exception as exc:
        unavailable = _unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc


class S3Storage:
    """S3 through boto3; works against AWS, MinIO and SeaweedFS (path-style addressing)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str = "us-east-1",
        page_size: int = 1000,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        max_attempts: int = 5,
    ) -> None:
        self.page_size = page_size
        # A session of its own: boto3's default session is not safe to share between threads.
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )

    def bucket_exists(self, bucket: str) -> bool:
        try:
            with _s3_errors(validate_bucket(bucket)):
                self.client.head_bucket(Bucket=bucket)
            return True
        except BucketNotFoundError:
            return False
        except ClientError as exc:
            if _code(exc) in ("403", "AccessDenied", "Forbidden") and self._denied(bucket):
                # Someone else's bucket, or ours without read rights: nothing a job can use.
                raise BucketNotFoundError(
                    f"bucket {bucket!r} does not exist or packsight's S3 credentials may not "
                    "read it"
                ) from exc
            raise

    def _denied(self, bucket: str) -> bool:
        """HEAD answers a bare 403 both for wrong credentials (a fault of this deployment, left
        to raise) and for a bucket these credentials may not read; a listing's error names
        which."""
        try:
            self.client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except ClientError as exc:
            return _code(exc) == "AccessDenied"
        return False

    def ensure_bucket(self, bucket: str) -> None:
        if self.bucket_exists(bucket):
            return
        try:
            with _s3_errors(bucket):
                self.client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = _code(exc)
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def list_objects(
        self, bucket: str, prefix: str = "", start_after: str = ""
    ) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(validate_bucket(bucket)):
            pages = paginator.paginate(
                Bucket=bucket,
                Prefix=validate_prefix(prefix),
                StartAfter=start_after,
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"], size=int(item["Size"]), etag=item["ETag"].strip('"')
                    )

    def head(self, bucket: str, key: str) -> ObjectInfo:
        with _s3_errors(validate_bucket(bucket), validate_key(key)):
            meta = self.client.head_object(Bucket=bucket, Key=key)
        return ObjectInfo(key=key, size=int(meta["ContentLength"]), etag=meta["ETag"].strip('"'))

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        info = self.head(bucket, key)
        with _s3_errors(bucket, key):
            self.client.download_file(bucket, key, str(dest))
        return info

    def get_bytes(self, bucket: str, key: str) -> bytes:
        with _s3_errors(validate_bucket(bucket), validate_key(key)):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        with _s3_errors(validate_bucket(bucket), validate_key(key)):
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, bucket: str, keys: list[str]) -> None:
        for first in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": validate_key(k)} for k in keys[first : first + 1000]]
            with _s3_errors(validate_bucket(bucket)):
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})

    def url(self, bucket: str, key: str, *, expires_s: int) -> str:
        # Signing is local (no request), so there is no outage to wait out here.
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": validate_bucket(bucket), "Key": validate_key(key)},
            ExpiresIn=expires_s,
        )


# What S3 answers when it refuses the credentials themselves (not access to one object).
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
CREDENTIAL_SETTINGS = "PACKSIGHT_S3_ACCESS_KEY and PACKSIGHT_S3_SECRET_KEY"


def credentials_problem(exc: BaseException) -> str | None:
    """A message naming the settings to fix when `exc` says packsight's S3 credentials are
    missing or refused; None for any other error. Such errors are the deployment's to fix, so
    they are neither outages nor facts about a video."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"no S3 credentials: set {CREDENTIAL_SETTINGS} (and PACKSIGHT_S3_ENDPOINT_URL)"
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in _CREDENTIAL_CODES:
            return f"S3 refused packsight's credentials ({code}): check {CREDENTIAL_SETTINGS}"
        if code in ("AccessDenied", "403", "Forbidden"):
            return (
                f"S3 denied access ({code}): check {CREDENTIAL_SETTINGS} and the bucket's "
                "permissions"
            )
    return None
