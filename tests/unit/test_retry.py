"""What counts as an outage (waited out) and what does not (fails now), and the retry window:
capped, jittered backoff that gives up with OutageError naming the service."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from sqlalchemy.exc import IntegrityError, OperationalError

from packsight.pipeline.retry import OutageError, RetryPolicy, is_transient
from packsight.storage.base import BucketNotFoundError, ObjectNotFoundError, StorageUnavailableError
from packsight.storage.s3 import _s3_errors


def client_error(code: str, status: int) -> ClientError:
    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


def translated(exc: Exception, key: str | None = "a.mp4") -> Exception:
    try:
        with _s3_errors("bucket", key):
            raise exc
    except Exception as caught:
        return caught
    raise AssertionError("nothing raised")


@pytest.mark.parametrize(
    ("raised", "becomes"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), StorageUnavailableError),
        (client_error("SlowDown", 503), StorageUnavailableError),
        (client_error("InternalError", 500), StorageUnavailableError),
        (client_error("RequestTimeout", 400), StorageUnavailableError),
        (client_error("NoSuchKey", 404), ObjectNotFoundError),
        (client_error("NoSuchBucket", 404), BucketNotFoundError),
        (client_error("AccessDenied", 403), ClientError),  # a fault of the setup, not an outage
        (NoCredentialsError(), NoCredentialsError),  # likewise: retrying cannot fix it
    ],
)
def test_s3_errors_are_outages_or_facts(raised: Exception, becomes: type) -> None:
    assert type(translated(raised)) is becomes


def test_transient_means_infrastructure() -> None:
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    assert is_transient(refused)
    assert is_transient(StorageUnavailableError("down"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(IntegrityError("INSERT", {}, ValueError("duplicate")))
    assert not is_transient(ValueError("a bug"))


def test_an_outage_is_retried_until_it_passes() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionRefusedError("not yet")
        return "done"

    policy = RetryPolicy(window_s=30, max_backoff_s=0.05, first_backoff_s=0.01)
    assert policy.call(flaky, what="database") == "done"
    assert len(calls) == 4


def test_a_lasting_outage_gives_up_naming_the_service() -> None:
    policy = RetryPolicy(window_s=0.2, max_backoff_s=0.05, first_backoff_s=0.01)

    def down() -> None:
        raise StorageUnavailableError("object storage unavailable (503)")

    with pytest.raises(OutageError, match="still unavailable") as raised:
        policy.call(down, what="object storage")
    assert raised.value.service == "object storage"


def test_other_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        RetryPolicy(window_s=30, max_backoff_s=0.05).call(broken, what="database")
    assert calls == [1]
