"""Objects packsight writes itself (adapters, training outputs), named by artifact:// URIs
and copied to and from local folders."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from packsight.storage.base import InvalidKeyError, ObjectNotFoundError, Storage
from packsight.storage.keys import validate_bucket, validate_key

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
    parsed = parse_artifact_uri(uri)
    if parsed is None:
        return uri
    dest = Path(cache_root) / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        download_folder(storage, *parsed, dest)
    return str(dest)
