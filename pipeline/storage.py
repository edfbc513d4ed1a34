"""The storage the settings name: the user's videos, and packsight's own objects."""

from __future__ import annotations

import os

from packsight.settings import Settings
from packsight.storage.base import Storage, StorageError
from packsight.storage.local import LocalStorage
from packsight.storage.s3 import S3Storage


def _s3_storage(settings: Settings, *, probe_timeout_s: float | None = None) -> S3Storage:
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    if probe_timeout_s is None:
        return S3Storage(
            endpoint_url=settings.s3_endpoint_url,
            access_key=settings.s3_access_key,
            secret_key=secret,
            region=settings.s3_region,
        )
    # A probe: one attempt with short timeouts, so a dead server answers "down" quickly.
    timeout = probe_timeout_s
    return S3Storage(
        endpoint_url=settings.s3_endpoint_url,
        access_key=settings.s3_access_key,
        secret_key=secret,
        region=settings.s3_region,
        connect_timeout=timeout,
        read_timeout=timeout,
        max_attempts=1,
    )


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
