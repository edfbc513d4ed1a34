"""How commands run work and report failures: the embedded default drives the work in this
process, and the errors a user can act on end the command with one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from packsight.faults import TransientError
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import BrokerUnavailableError
from packsight.storage.base import StorageError, StorageUnavailableError


@contextmanager
def one_line_errors(*expected: type[Exception]) -> Iterator[None]:
    """Bad input, a missing bucket, an absent broker, an outage that outlasted its retries (and
    the `expected` errors of the command): one line, exit 1."""
    errors: tuple[type[Exception], ...] = (
        ValueError,
        StorageError,
        BrokerUnavailableError,
        TransientError,
        *expected,
    )
    try:
        yield
    except StorageUnavailableError as exc:
        raise click.ClickException(
            f"{exc}: is the S3 server up and PACKSIGHT_S3_ENDPOINT_URL right?"
        ) from exc
    except errors as exc:
        raise click.ClickException(str(exc)) from exc


def drive_here(app: Context, **subject: str) -> None:
    """Run the new work in this process (the embedded default); an outage that outlasts the
    retry window stops the command with one line, the work kept for the next run of it."""
    from packsight.pipeline.embedded import drive

    try:
        drive(app, **subject)
    except TransientError as exc:
        raise click.ClickException(
            f"{exc}; what is done is kept: run the same command again to finish"
        ) from exc
