"""Bucket names, keys and prefixes: what S3 and the local folder accept, checked before any
request, with messages that show the offending value."""

from __future__ import annotations

import re

from packsight.storage.base import InvalidKeyError

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
