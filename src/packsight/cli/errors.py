"""What a user sees when a command fails: one line that names the cause and what to change,
never a traceback (PACKSIGHT_DEBUG=1 shows it, for a bug report)."""

from __future__ import annotations

import os
from typing import Any

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from packsight.cli.context import CommandContext
from packsight.storage.s3 import credentials_problem

DEBUG_ENV = "PACKSIGHT_DEBUG"


def describe(exc: Exception, *, database: str) -> str:
    """One line for an error no command expected."""
    if isinstance(exc, (OperationalError, ProgrammingError)) and _missing_table(exc):
        return f"the database {database} has no packsight tables yet: run `packsight migrate`"
    if isinstance(exc, OperationalError):
        reason = _first_line(exc.orig)
        return f"cannot use the database {database} ({reason}): check PACKSIGHT_DATABASE_URL"
    if (problem := credentials_problem(exc)) is not None:
        return problem
    return f"{type(exc).__name__}: {_first_line(exc)} (set {DEBUG_ENV}=1 to see the traceback)"


def _missing_table(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _first_line(value: Any) -> str:
    return str(value).strip().splitlines()[0] if str(value).strip() else type(value).__name__


class PacksightGroup(click.Group):
    """The command group that turns unexpected errors into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise click.ClickException(describe(exc, database=_database(ctx))) from exc


def _database(ctx: click.Context) -> str:
    cmd = ctx.find_object(CommandContext)
    try:
        return cmd.shown_database if cmd is not None else "(not configured)"
    except click.UsageError:  # the settings themselves are invalid
        return "(invalid settings)"
