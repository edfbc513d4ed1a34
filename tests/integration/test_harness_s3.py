"""The harness's S3 (weed mini): private keys, AWS-like errors, clean-up."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator

import harness
import httpx
import pytest
from botocore.exceptions import ClientError
from harness import S3Endpoint, pid_alive
from harness.process import _port_open

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3: S3Endpoint) -> Iterator[str]:
    client, name = s3.client(), f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def test_s3_put_get_and_paged_listing(s3: S3Endpoint, bucket: str) -> None:
    client = s3.client()
    keys = [f"clips/{index:02d}.json" for index in range(5)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert client.get_object(Bucket=bucket, Key=keys[3])["Body"].read() == keys[3].encode()

    pages, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = client.list_objects_v2(Bucket=bucket, Prefix="clips/", MaxKeys=2, **extra)
        pages.append([item["Key"] for item in page.get("Contents", [])])
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [key for page in pages for key in page] == keys


def test_s3_has_no_implicit_buckets(s3: S3Endpoint) -> None:
    with pytest.raises(ClientError) as error:
        s3.client().put_object(Bucket=f"missing-{uuid.uuid4().hex[:8]}", Key="k", Body=b"x")
    assert error.value.response["Error"]["Code"] == "NoSuchBucket"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key": "PSUNKNOWNKEY0000"}, "InvalidAccessKeyId"),
    ],
)
def test_s3_rejects_wrong_credentials(
    s3: S3Endpoint, change: dict[str, str], expected: str
) -> None:
    wrong = dataclasses.replace(s3, **change).client(max_attempts=1)
    with pytest.raises(ClientError) as error:
        wrong.list_buckets()
    assert error.value.response["Error"]["Code"] == expected


def test_s3_rejects_anonymous_requests(s3: S3Endpoint, bucket: str) -> None:
    s3.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"x")
    assert httpx.get(f"{s3.endpoint_url}/{bucket}/secret.txt").status_code == 403


def test_s3_server_cleans_up() -> None:
    server = harness.s3_server()
    server.stop()
    assert server.process is not None and not pid_alive(server.process.pid)
    assert not server.root.exists()
    assert not any(_port_open(port) for port in server.ports.values())
    leftovers = [p for p in os.listdir("/tmp") if p.startswith("seaweedfs-")]
    assert not [p for p in leftovers if any(f"-{port}.sock" in p for port in server.ports.values())]
