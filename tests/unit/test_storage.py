"""Key validation and the local-folder backend (the S3 backend is tested against SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packsight.storage import (
    BucketNotFoundError,
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    validate_bucket,
    validate_key,
)


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x.mp4", "a/../../x.mp4", "a/./b.mp4", "a\\b.mp4", "a\x00.mp4", ".."],
)
def test_invalid_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize("key", ["a.mp4", "site/2026-11/U0101_S0100.mp4", "dots..in-name.mp4"])
def test_valid_keys_pass(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("bucket", ["", ".", "..", "a/b", "x\x00"])
def test_invalid_buckets_are_rejected(bucket: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_bucket(bucket)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "root")
    store.ensure_bucket("archive")
    return store


def test_round_trip_and_listing(storage: LocalStorage, tmp_path: Path) -> None:
    storage.put_bytes("archive", "site-a/b.mp4", b"bb")
    storage.put_bytes("archive", "site-a/a.mp4", b"a")
    storage.put_bytes("archive", "site-b/c.mp4", b"c")
    assert storage.get_bytes("archive", "site-a/b.mp4") == b"bb"
    listed = list(storage.list_objects("archive", "site-a/"))
    assert [o.key for o in listed] == ["site-a/a.mp4", "site-a/b.mp4"]
    assert [o.size for o in listed] == [1, 2]
    info = storage.download("archive", "site-b/c.mp4", tmp_path / "c.mp4")
    assert (tmp_path / "c.mp4").read_bytes() == b"c" and info.size == 1


def test_replacing_a_file_changes_its_etag(storage: LocalStorage) -> None:
    storage.put_bytes("archive", "v.mp4", b"one")
    before = storage.head("archive", "v.mp4").etag
    storage.put_bytes("archive", "v.mp4", b"other content")
    assert storage.head("archive", "v.mp4").etag != before


def test_missing_things_raise_specific_errors(storage: LocalStorage) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"nope\.mp4"):
        storage.head("archive", "nope.mp4")
    with pytest.raises(BucketNotFoundError, match="no-bucket"):
        list(storage.list_objects("no-bucket"))
    assert not storage.bucket_exists("no-bucket")


def test_symlinks_cannot_escape_the_bucket(storage: LocalStorage, tmp_path: Path) -> None:
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"outside")
    os.symlink(secret, storage.root / "archive" / "link.mp4")
    with pytest.raises(InvalidKeyError, match="outside"):
        storage.get_bytes("archive", "link.mp4")
    with pytest.raises(InvalidKeyError):
        storage.put_bytes("archive", "../escape.mp4", b"x")
    assert not (storage.root / "escape.mp4").exists()


def test_delete_removes_exactly_the_given_keys(storage: LocalStorage) -> None:
    storage.ensure_bucket("b")
    for key in ("run/ck/1.pt", "run/ck/2.pt", "run/adapter.bin"):
        storage.put_bytes("b", key, b"x")
    storage.delete("b", ["run/ck/1.pt", "run/ck/2.pt", "run/ck/missing.pt"])
    assert [o.key for o in storage.list_objects("b", "run/")] == ["run/adapter.bin"]
