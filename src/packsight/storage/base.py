"""What every storage backend shares: its interface, what it returns, and the errors a
user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packsight.faults import TransientError


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


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


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
    def url(self, bucket: str, key: str, *, expires_s: int) -> str:
        """Where a person's browser can fetch the object: a pre-signed URL valid for
        `expires_s` on S3, a file:// URL for a local folder."""
        ...
