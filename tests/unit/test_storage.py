"""Key validation and the local-folder backend (the S3 backend is tested against SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packsight.storage.base import BucketNotFoundError, InvalidKeyError, ObjectNotFoundError
from packsight.storage.keys import validate_bucket, validate_key, validate_prefix
from packsight.storage.local import LocalStorage


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x.mp4",
        "a/../../x.mp4",
        "a/./b.mp4",
        "a\\b.mp4",
        "a\x00.mp4",
        "..",
        "a\nb.mp4",
        "a\tb.mp4",
        "a\x7fb.mp4",
        "a\x85b.mp4",  # C1 (NEL)
        "a\ud800.mp4",  # a lone surrogate has no UTF-8 form
        "k" * 1021 + ".mp4",  # 1,025 bytes
        "é" * 511 + ".mp4",  # 515 characters but 1,026 bytes of UTF-8
    ],
)
def test_invalid_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "a.mp4",
        "site/2026-11/U0101_S0100.mp4",
        "dots..in-name.mp4",
        "k" * 1020 + ".mp4",  # exactly 1,024 bytes
        "séance/vidéo 1.mp4",
    ],
)
def test_valid_keys_pass(key: str) -> None:
    assert validate_key(key) == key


def test_key_errors_name_the_key_but_not_all_of_it() -> None:
    key = "site/" + "x" * 2000 + ".mp4"
    with pytest.raises(InvalidKeyError, match="1024") as error:
        validate_key(key)
    assert "'site/xxx" in str(error.value) and len(str(error.value)) < 300
    with pytest.raises(InvalidKeyError, match="U\\+0000 at position 1"):
        validate_key("a\x00b")


def test_prefixes_are_bounded_and_printable() -> None:
    assert validate_prefix("site-a/2026/") == "site-a/2026/"
    with pytest.raises(InvalidKeyError, match="1024"):
        validate_prefix("p" * 1025)
    with pytest.raises(InvalidKeyError, match="control character"):
        validate_prefix("site\x1b[31m/")


@pytest.mark.parametrize(
    "bucket",
    [
        "",
        ".",
        "..",
        "a/b",
        "x\x00",
        "ab",  # too short
        "a" * 64,  # too long
        "Archive",
        "my_bucket",
        "-archive",
        "archive-",
        ".archive",
        "arc..hive",
        "192.168.5.4",
        "xn--archive",
        "sthree-archive",
        "archive-s3alias",
        "archive--ol-s3",
        "bücket",
    ],
)
def test_invalid_buckets_are_rejected(bucket: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_bucket(bucket)


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "packsight-artifacts", "site.a-2026", "1-2"])
def test_s3_bucket_names_pass(bucket: str) -> None:
    assert validate_bucket(bucket) == bucket


@pytest.mark.parametrize("name", ["b", "Archive 2026", "my_videos", "vidéos"])
def test_local_storage_takes_ordinary_folder_names(tmp_path: Path, name: str) -> None:
    storage = LocalStorage(tmp_path)
    storage.ensure_bucket(name)
    storage.put_bytes(name, "a.mp4", b"x")
    assert [o.key for o in storage.list_objects(name)] == ["a.mp4"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\nb", "x" * 256])
def test_local_storage_refuses_names_that_are_not_one_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidKeyError):
        LocalStorage(tmp_path).ensure_bucket(name)


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
