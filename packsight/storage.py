"""Object storage behind one interface: S3 (AWS, MinIO, SeaweedFS) and a local folder."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError

from packsight.faults import TransientError
from packsight.settings import Settings


class StorageError(Exception):
    """Base class for storage problems a user can act on."""


class InvalidKeyError(StorageError):
    """A bucket name or key is malformed or would escape its root."""


class BucketNotFoundError(StorageError):
    pass


class ObjectNotFoundError(StorageError):
    pass


class StorageUnavailableError(TransientError):
    """The S3 server could not be reached or answered "try again" (5xx, throttling). Not a
    StorageError: nothing is wrong with the object, so nothing may be failed because of it."""


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


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


# S3's limits: an object key is at most 1,024 bytes of UTF-8 (prefixes likewise).
MAX_KEY_BYTES = 1024
_SHOWN_CHARS = 100
# General-purpose bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit. Reserved prefixes and suffixes (AWS uses them for access
# points, aliases and other bucket types) and IP-address look-alikes are refused as AWS does.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def shown(text: str, limit: int = _SHOWN_CHARS) -> str:
    """`text` quoted for an error message, cut to `limit` characters (keys can be 1 KiB)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


# Control characters (C0, DEL, C1) break logs and S3 listings, Postgres refuses NUL in text, and
# a lone surrogate cannot be encoded as UTF-8 at all.
_BAD_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def bad_character(text: str) -> str | None:
    """A description of the first character that has no place in a name or key, or None."""
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "unpaired surrogate" if code >= 0xD800 else "control character"
    return f"{kind} U+{code:04X} at position {found.start()}"


def validate_prefix(prefix: str, *, what: str = "prefix") -> str:
    """A key prefix: at most 1,024 UTF-8 bytes, no control characters."""
    if problem := bad_character(prefix):
        raise InvalidKeyError(f"{what} {shown(prefix)} contains a {problem}")
    size = len(prefix.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"{what} {shown(prefix)} is {size} bytes long in UTF-8; S3 allows at most "
            f"{MAX_KEY_BYTES}"
        )
    return prefix


def validate_key(key: str) -> str:
    """Reject keys S3 would refuse (over 1,024 UTF-8 bytes), control characters, and keys that
    are empty, absolute, or climb out of their bucket ("..")."""
    if not key:
        raise InvalidKeyError("object key must not be empty")
    validate_prefix(key, what="object key")
    if key.startswith("/") or "\\" in key:
        raise InvalidKeyError(f"object key {shown(key)} must be relative, with '/' separators")
    # Split by hand: PurePosixPath would normalise "a/./b" to "a/b" and hide the segment.
    if any(part in ("..", ".") for part in key.split("/")):
        raise InvalidKeyError(f"object key {shown(key)} must not contain '.' or '..' segments")
    return key


def validate_bucket(bucket: str) -> str:
    """S3's naming rules for general-purpose buckets (what the API and S3 storage accept)."""
    rule = (
        "3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter "
        "or digit"
    )
    if not _BUCKET_NAME.fullmatch(bucket):
        raise InvalidKeyError(f"invalid bucket name {shown(bucket)}: S3 bucket names are {rule}")
    if ".." in bucket:
        raise InvalidKeyError(f"invalid bucket name {shown(bucket)}: no two adjacent dots")
    if _IP_ADDRESS.fullmatch(bucket):
        raise InvalidKeyError(f"invalid bucket name {shown(bucket)}: it looks like an IP address")
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        raise InvalidKeyError(
            f"invalid bucket name {shown(bucket)}: S3 reserves the prefixes "
            f"{', '.join(_RESERVED_PREFIXES)} and the suffixes {', '.join(_RESERVED_SUFFIXES)}"
        )
    return bucket


def validate_folder_bucket(bucket: str) -> str:
    """A bucket of local-folder storage: one ordinary folder name (a folder given to
    `packsight label` keeps its name, which need not follow S3's rules), nothing that could
    name another folder or break a log line."""
    if not bucket or bucket in (".", "..") or "/" in bucket or "\\" in bucket:
        raise InvalidKeyError(f"invalid bucket (folder) name {shown(bucket)}")
    if problem := bad_character(bucket):
        raise InvalidKeyError(f"bucket (folder) name {shown(bucket)} contains a {problem}")
    if len(bucket.encode("utf-8")) > 255:  # what file systems and the jobs table hold
        raise InvalidKeyError(f"bucket (folder) name {shown(bucket)} is over 255 bytes long")
    return bucket


def link_local_bucket(root: Path, folder: Path) -> str:
    """Make `folder` a bucket of the local storage under `root`, named after the folder: a
    symbolic link `root/<name>`, so every later command (labelling, training, results) finds
    the videos by bucket name, wherever the folder is. Returns the bucket name."""
    folder = Path(folder).resolve()
    name = validate_folder_bucket(folder.name)
    target = Path(root) / name
    if target.exists() and target.resolve() == folder:
        return name  # the folder is that bucket already (or was linked before)
    if target.exists() or target.is_symlink():
        raise InvalidKeyError(
            f"bucket {shown(name)} is already {target.resolve()}; rename the folder "
            f"{folder} (its name is its bucket) or remove {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(folder, target_is_directory=True)
    except FileExistsError:  # another command linked it at the same moment
        if target.resolve() != folder:
            raise InvalidKeyError(f"bucket {shown(name)} is already {target.resolve()}") from None
    return name


class Storage(Protocol):
    def bucket_exists(self, bucket: str) -> bool: ...
    def ensure_bucket(self, bucket: str) -> None: ...
    def list_objects(
        self, bucket: str, prefix: str = "", start_after: str = ""
    ) -> Iterator[ObjectInfo]: ...
    def head(self, bucket: str, key: str) -> ObjectInfo: ...
    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo: ...
    def get_bytes(self, bucket: str, key: str) -> bytes: ...
    def put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...
    def delete(self, bucket: str, keys: list[str]) -> None: ...


class LocalStorage:
    """Buckets are sub-folders of `root`; keys are relative POSIX paths inside them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / validate_folder_bucket(bucket)

    def _path(self, bucket: str, key: str) -> Path:
        base = self._bucket_dir(bucket).resolve()
        path = (base / validate_key(key)).resolve()
        # Symlinks inside the folder could still point outside it.
        if not path.is_relative_to(base):
            raise InvalidKeyError(f"object key {key!r} resolves outside bucket {bucket!r}")
        return path

    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_dir(bucket).is_dir()

    def ensure_bucket(self, bucket: str) -> None:
        self._bucket_dir(bucket).mkdir(parents=True, exist_ok=True)

    def list_objects(
        self, bucket: str, prefix: str = "", start_after: str = ""
    ) -> Iterator[ObjectInfo]:
        base = self._bucket_dir(bucket)
        validate_prefix(prefix)
        if not base.is_dir():
            raise BucketNotFoundError(f"bucket {bucket!r} does not exist under {self.root}")
        # Only the folder the prefix points into is walked; keys come sorted, as S3 lists
        # them, so `start_after` resumes a listing the same way.
        folder = prefix.rpartition("/")[0]
        keys = []
        for top, _, files in os.walk(base / folder if folder else base):
            relative = Path(top).relative_to(base).as_posix()
            stem = "" if relative == "." else relative + "/"
            keys += [stem + name for name in files]
        for key in sorted(keys):
            if key.startswith(prefix) and key > start_after:
                yield self._info(key, base / key)

    @staticmethod
    def _info(key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        # Size + mtime identify a local file's content well enough to detect a replaced video.
        return ObjectInfo(key=key, size=stat.st_size, etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}")

    def head(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path(bucket, key)
        if not path.is_file():
            raise ObjectNotFoundError(f"object {key!r} not found in bucket {bucket!r}")
        return self._info(key, path)

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        info = self.head(bucket, key)
        shutil.copyfile(self._path(bucket, key), dest)
        return info

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.head(bucket, key)
        return self._path(bucket, key).read_bytes()

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: readers never see half a file

    def delete(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            self._path(bucket, key).unlink(missing_ok=True)


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


def _s3_storage(settings: Settings, *, probe_timeout_s: float | None = None) -> S3Storage:
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    connection = {
        "endpoint_url": settings.s3_endpoint_url,
        "access_key": settings.s3_access_key,
        "secret_key": secret,
        "region": settings.s3_region,
    }
    if probe_timeout_s is None:
        return S3Storage(**connection)
    # A probe: one attempt with short timeouts, so a dead server answers "down" quickly.
    timeout = probe_timeout_s
    return S3Storage(**connection, connect_timeout=timeout, read_timeout=timeout, max_attempts=1)


def open_storage(settings: Settings) -> Storage:
    """The storage backend the settings name."""
    if settings.storage == "s3":
        return _s3_storage(settings)
    return LocalStorage(settings.resolved_local_root)


def probe_storage(settings: Settings, *, timeout_s: float) -> None:
    """Raise unless object storage answers within about `timeout_s`: S3 answers a signed HEAD
    of the artifact bucket (one attempt, short timeouts; a missing bucket is fine, it is created
    on first use), the root folder is usable locally."""
    if settings.storage == "s3":
        _s3_storage(settings, probe_timeout_s=timeout_s).bucket_exists(settings.artifact_bucket)
        return
    root = settings.resolved_local_root
    root.mkdir(parents=True, exist_ok=True)  # the embedded default creates it on first use
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise StorageError(f"storage folder {root} is not readable and writable")


def open_artifact_storage(settings: Settings) -> Storage:
    """Where packsight keeps its own objects (sampled frames, adapters): the S3 server when S3
    is configured, else a folder under data_dir, never inside the user's source folder."""
    storage = (
        open_storage(settings)
        if settings.storage == "s3"
        else LocalStorage(settings.data_dir.resolve() / "objects")
    )
    storage.ensure_bucket(settings.artifact_bucket)
    return storage


# Objects packsight wrote itself (adapters, training outputs) are named by URIs of this scheme:
# "artifact://<bucket>/<prefix>", resolved against the artifact storage of whoever reads them.
ARTIFACT_SCHEME = "artifact://"


def artifact_uri(bucket: str, prefix: str) -> str:
    return f"{ARTIFACT_SCHEME}{validate_bucket(bucket)}/{validate_key(prefix.strip('/'))}"


def parse_artifact_uri(uri: str) -> tuple[str, str] | None:
    """(bucket, prefix) of an artifact:// URI; None for anything else (a path, a hub id)."""
    if not uri.startswith(ARTIFACT_SCHEME):
        return None
    bucket, _, prefix = uri.removeprefix(ARTIFACT_SCHEME).partition("/")
    if not bucket or not prefix.strip("/"):
        raise InvalidKeyError(f"{uri!r} needs a bucket and a prefix: artifact://bucket/prefix")
    return validate_bucket(bucket), validate_key(prefix.strip("/"))


def upload_folder(storage: Storage, folder: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under `folder` to `prefix/<relative path>`; return the keys."""
    keys = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        key = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}"
        storage.put_bytes(bucket, key, path.read_bytes())
        keys.append(key)
    return keys


def download_folder(storage: Storage, bucket: str, prefix: str, dest: Path) -> Path:
    """Download every object under `prefix/` into `dest`, atomically: `dest` appears complete or
    not at all. Raises ObjectNotFoundError when nothing is there."""
    dest = Path(dest)
    base = prefix.strip("/") + "/"
    objects = list(storage.list_objects(bucket, base))
    if not objects:
        raise ObjectNotFoundError(f"no objects under {bucket}/{base}")
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for info in objects:
        target = tmp / info.key.removeprefix(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download(bucket, info.key, target)
    if dest.exists():
        shutil.rmtree(tmp)  # another process finished first; theirs is as good
    else:
        tmp.rename(dest)
    return dest


def resolve_artifact(uri: str, storage: Storage, cache_root: Path) -> str:
    """A local folder for an artifact:// URI (downloaded once into `cache_root`; artifacts are
    immutable, so a cached copy never goes stale); any other value (a path, a hub id) as is."""
    import hashlib

    parsed = parse_artifact_uri(uri)
    if parsed is None:
        return uri
    dest = Path(cache_root) / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        download_folder(storage, *parsed, dest)
    return str(dest)
