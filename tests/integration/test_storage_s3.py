"""S3Storage against a real S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import S3Endpoint

from packsight.storage.base import BucketNotFoundError, ObjectNotFoundError
from packsight.storage.s3 import S3Storage

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(s3: S3Endpoint) -> S3Storage:
    return S3Storage(
        endpoint_url=s3.endpoint_url,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        page_size=2,  # force several pages for a handful of objects
    )


def test_listing_follows_every_page(storage: S3Storage) -> None:
    storage.ensure_bucket("paging")
    keys = [f"p/{i:02d}.mp4" for i in range(7)] + ["q/other.mp4"]
    for key in keys:
        storage.put_bytes("paging", key, key.encode())
    listed = list(storage.list_objects("paging", "p/"))
    assert [o.key for o in listed] == keys[:7]
    assert all(o.etag and o.size == len(o.key) for o in listed)


def test_round_trip_and_errors(storage: S3Storage, tmp_path: Path) -> None:
    storage.ensure_bucket("roundtrip")
    storage.ensure_bucket("roundtrip")  # idempotent
    storage.put_bytes("roundtrip", "a/b.mp4", b"video bytes")
    assert storage.get_bytes("roundtrip", "a/b.mp4") == b"video bytes"
    info = storage.download("roundtrip", "a/b.mp4", tmp_path / "b.mp4")
    assert info.size == 11 and (tmp_path / "b.mp4").read_bytes() == b"video bytes"
    with pytest.raises(ObjectNotFoundError):
        storage.head("roundtrip", "missing.mp4")
    with pytest.raises(ObjectNotFoundError):
        storage.get_bytes("roundtrip", "missing.mp4")
    assert not storage.bucket_exists("never-created")
    with pytest.raises(BucketNotFoundError):
        list(storage.list_objects("never-created"))


def test_wrong_credentials_are_refused(s3: S3Endpoint) -> None:
    from botocore.exceptions import ClientError

    bad = S3Storage(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key="wrong")
    with pytest.raises(ClientError):
        bad.bucket_exists("anything")


def test_delete_removes_exactly_the_given_keys(storage: S3Storage) -> None:
    storage.ensure_bucket("deleting")
    keys = [f"run/checkpoints/{i}.pt" for i in range(5)] + ["run/adapter/a.bin"]
    for key in keys:
        storage.put_bytes("deleting", key, b"x")
    storage.delete("deleting", [*keys[:5], "run/checkpoints/never-existed.pt"])
    assert [o.key for o in storage.list_objects("deleting", "run/")] == ["run/adapter/a.bin"]
