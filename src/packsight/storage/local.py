"""Local-folder storage: buckets are folders (or links to folders) under one root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from packsight.storage.base import (
    BucketNotFoundError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
)
from packsight.storage.keys import shown, validate_folder_bucket, validate_key, validate_prefix


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

    def url(self, bucket: str, key: str, *, expires_s: int) -> str:
        return self._path(bucket, key).as_uri()
