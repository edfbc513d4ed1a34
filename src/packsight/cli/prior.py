"""`packsight prior ...`: the transition prior a model version smooths its timelines with,
shown or learned now from verified labels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import one_line_errors
from packsight.labels.prior import TransitionPrior
from packsight.labels.prior_plot import render_prior_png
from packsight.labels.prior_view import learned_from, prior_document, prior_lines
from packsight.models.evaluations import UnknownModelVersionError
from packsight.pipeline.priors import (
    NoPriorError,
    NoVerifiedLabelsError,
    VersionPrior,
    learn_prior_now,
    stored_prior,
)
from packsight.storage.base import InvalidKeyError
from packsight.storage.keys import validate_bucket, validate_prefix

ERRORS = (UnknownModelVersionError, NoPriorError, NoVerifiedLabelsError)
FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
PNG = click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the transition matrix (and the next operations) into this PNG.",
)


@click.group()
def prior() -> None:
    """The transition prior timelines are smoothed with: show it, or learn one now."""


@prior.command("show")
@click.option(
    "--version",
    "version",
    metavar="NAME",
    help="Model version (name or id); default: the one new jobs label with (the serving one).",
)
@FORMAT
@PNG
@pass_command_context
def show(cmd: CommandContext, version: str | None, fmt: str, png_path: Path | None) -> None:
    """Print the prior stored with a model version; exits 1 if it has none."""
    cmd.ready_database()
    with one_line_errors(*ERRORS):
        found = stored_prior(cmd.app, version)
    head = f"model version {found.version_id}: {found.version}" + (
        " (serving)" if found.serving else ""
    )
    about = {"model_version": found.version, "serving": found.serving, "source": found.source}
    _print(found.prior, [head, f"source: {found.source}"], fmt, about)
    _draw(found.prior, png_path, found.version)


@prior.command("learn")
@click.option("--bucket", required=True, help="Learn from the verified labels of this bucket.")
@click.option("--prefix", default="", help="Only videos whose keys start with this.")
@click.option(
    "--taxonomy", help="Labels of this taxonomy (default: the version's, else the set one)."
)
@click.option(
    "--version",
    "version",
    metavar="NAME",
    help="Store the prior into this model version (name or id): its timelines then use it.",
)
@FORMAT
@PNG
@pass_command_context
def learn(
    cmd: CommandContext,
    bucket: str,
    prefix: str,
    taxonomy: str | None,
    version: str | None,
    fmt: str,
    png_path: Path | None,
) -> None:
    """Learn a prior now from verified labels (every subject); exits 1 if there are none."""
    for check, value, hint in (
        (validate_bucket, bucket, "--bucket"),
        (validate_prefix, prefix, "--prefix"),
    ):
        try:
            check(value)
        except InvalidKeyError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from exc
    cmd.ready_database()
    with one_line_errors(*ERRORS):
        learned = learn_prior_now(
            cmd.app, bucket=bucket, prefix=prefix, taxonomy=taxonomy, version=version
        )
    under = f" under {prefix!r}" if prefix else ""
    source = (
        f"learned now from the verified labels of bucket {bucket!r}{under} "
        f"({learned.clip_seconds:g} s windows)"
    )
    stored = _stored(learned.stored)
    _print(learned.prior, [f"source: {source}"], fmt, {"source": source, "stored_in": stored})
    for video, why in learned.skipped:
        click.echo(f"skipped {video}: {why}", err=True)
    if learned.stored is not None:
        click.echo(
            f"stored this prior ({learned_from(learned.prior)}) into model version "
            f"{learned.stored.version_id}: {learned.stored.version}; its timelines are smoothed "
            "with it from now on",
            err=fmt == "json",
        )
    _draw(learned.prior, png_path, stored or f"bucket {bucket}{'/' + prefix if prefix else ''}")


def _stored(found: VersionPrior | None) -> str | None:
    return found.version if found is not None else None


def _print(found: TransitionPrior, head: list[str], fmt: str, extra: dict[str, object]) -> None:
    if fmt == "json":
        click.echo(json.dumps({**extra, "prior": prior_document(found)}, indent=2))
    else:
        click.echo("\n".join([*head, *prior_lines(found)]))


def _draw(found: TransitionPrior, png_path: Path | None, title: str) -> None:
    if png_path is None:
        return
    try:
        png_path.write_bytes(render_prior_png(found, title=f"prior of {title}"))
    except OSError as exc:
        raise click.ClickException(f"cannot write {png_path}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {png_path}", err=True)
