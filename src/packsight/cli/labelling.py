"""`packsight label` and `packsight results`: label an archive, read what came of it."""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.exports import ClipFilter, check_out, export_openpack_here, write_records
from packsight.cli.progress import Progress, Reading
from packsight.cli.running import drive_here, one_line_errors
from packsight.models.tables.jobs import Job
from packsight.pipeline.results import JobSummary, find_job, job_results, job_summary
from packsight.pipeline.submission import JobRequest, submit_job

FOLLOW_EVERY_S = 2.0
RESULTS_PAGE = 1000


@click.command()
@click.argument("source")
@click.option("--wait/--no-wait", default=True, help="Follow the job until it ends.")
@pass_command_context
def label(cmd: CommandContext, source: str, wait: bool) -> None:
    """Label every video under SOURCE (a local folder or s3://bucket/prefix)."""
    bucket, prefix = cmd.source(source)
    cmd.ready_database()
    if cmd.settings.embedded:
        click.echo(f"embedded mode: {cmd.shown_database}, in-process tasks")
    # On the embedded default this process labels: a model it cannot load fails the command
    # now, before anything is queued, not each video after minutes of retries.
    check = (lambda: _check_model(cmd)) if cmd.settings.embedded else None
    with one_line_errors():
        submission = submit_job(cmd.app, JobRequest(bucket, prefix=prefix), check_runner=check)
    listed = "" if submission.listed else " so far (listing the rest)"
    click.echo(
        f"job {submission.job_id}: {submission.items} videos{listed}, "
        f"labelled in the {cmd.settings.taxonomy} taxonomy"
    )
    started = time.monotonic()
    with Progress(lambda: _reading(cmd, submission.job_id), unit="clips"):
        if cmd.app.embedded:
            drive_here(cmd.app, job_id=submission.job_id)
        elif wait:
            _follow(cmd, submission.job_id)
    summary = _summary(cmd, submission.job_id)
    _print_summary(summary, time.monotonic() - started)
    if summary.failed:
        sys.exit(1)


def _check_model(cmd: CommandContext) -> None:
    from packsight.vlm.loading import ModelLoadError, check_model_available  # loads torch

    with one_line_errors(ModelLoadError):
        check_model_available(cmd.settings.model)


def _summary(cmd: CommandContext, job_id: str, *, failed_only: bool = False) -> JobSummary:
    def read(session: Any) -> JobSummary:
        job = find_job(session, job_id)
        if job is None:
            raise click.ClickException(f"job {job_id} is gone from {cmd.shown_database}")
        return job_summary(session, job, failed_only=failed_only, limit=0 if failed_only else None)

    with one_line_errors():
        return cmd.app.transaction(read)


def _reading(cmd: CommandContext, job_id: str) -> Reading:
    """Clips with an outcome of the clips sampled so far, and the videos done."""

    def read(session: Any) -> JobSummary | None:
        job = find_job(session, job_id)
        return job_summary(session, job, failed_only=True, limit=0) if job else None

    summary = cmd.app.try_transaction(read, quiet=True)
    if summary is None:
        return 0, None, "waiting for the database"
    clips, items = summary.counts.clips, summary.counts.items
    videos = items.get("succeeded", 0) + items.get("failed", 0)
    state = f"{videos}/{summary.counts.items_total} videos, {clips['failed']} clips failed"
    return clips["labelled"] + clips["failed"], clips["total"] or None, state


def _follow(cmd: CommandContext, job_id: str) -> None:
    while not (summary := _summary(cmd, job_id, failed_only=True)).final:
        if Progress.wanted():  # the bar shows it
            time.sleep(FOLLOW_EVERY_S)
            continue
        items = " ".join(f"{k}={v}" for k, v in summary.counts.items.items() if v)
        clips = summary.counts.clips
        click.echo(
            f"  {summary.state}: items {items}; clips {clips['labelled']}/{clips['total']}",
            err=True,
        )
        time.sleep(FOLLOW_EVERY_S)


def _print_summary(summary: JobSummary, elapsed: float) -> None:
    """A line per video; a failed video's cause in full (on a terminal, wrapped to its width;
    elsewhere on one line, for grep)."""
    click.echo(f"\n{'video':<44} {'state':<10} {'clips':>5} {'labelled':>8}  error")
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for item in summary.items:
        clips = item.clips if item.clips is not None else "-"
        row = f"{item.key[-44:]:<44} {item.state:<10} {clips:>5} {item.labelled:>8}  "
        error = item.error or ""
        cause = (textwrap.wrap(error, max(30, width - len(row))) if width else [error]) or [""]
        click.echo(row + cause[0])
        for more in cause[1:]:
            click.echo(" " * len(row) + more)
    c = summary.counts.clips
    click.echo(
        f"\njob {summary.id} {summary.state}: {summary.counts.items_total} videos, "
        f"{c['total']} clips, {c['labelled']} labelled, {c['failed']} failed, {elapsed:.1f}s"
    )
    if summary.error:
        click.echo(f"job error: {summary.error}")


@click.command()
@click.option("--job", "job_id", help="Job id (default: the latest job).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "table", "openpack"]),
    default="jsonl",
    show_default=True,
    help="openpack: each video's timeline as OpenPack operation annotations (with --out).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    help="Write the records to this file instead of standard output (openpack: into this "
    "new or empty folder).",
)
@click.option(
    "--raw",
    is_flag=True,
    help="openpack: the clips' raw answers, not the timeline smoothed with the prior.",
)
@click.option("--video", "video_key", help="Only this video's clips (its key).")
@click.option("--operation", help="Only clips whose dominant operation is this one.")
@click.option(
    "--below",
    "max_confidence",
    type=click.FloatRange(0, 1),
    help="Only clips labelled with a confidence below this (the ones to check first).",
)
@pass_command_context
def results(
    cmd: CommandContext,
    job_id: str | None,
    fmt: str,
    out_path: Path | None,
    video_key: str | None,
    operation: str | None,
    max_confidence: float | None,
    raw: bool,
) -> None:
    """Print or export a job's per-clip predictions (clips without a label go to stderr), or
    its videos' timelines as OpenPack annotations (--format openpack --out DIR)."""
    check_out(fmt, out_path, raw=raw, clip_filters=(operation, max_confidence))
    cmd.ready_database()
    if fmt == "openpack":
        assert out_path is not None  # check_out
        with one_line_errors():
            summary = cmd.app.transaction(lambda session: _job_or_fail(cmd, session, job_id))
        export_openpack_here(cmd.app, summary, out_path, raw=raw, video_key=video_key)
        return
    wanted = ClipFilter(video_key=video_key, operation=operation, below=max_confidence)
    with one_line_errors():
        summary = cmd.app.transaction(lambda session: _job_or_fail(cmd, session, job_id))
        click.echo(f"job {summary.id}: operations of the {summary.taxonomy} taxonomy", err=True)
        with click.open_file(str(out_path) if out_path else "-", "w") as out:
            written, unlabelled = write_records(
                _pages(cmd, summary.id), out, fmt=fmt, wanted=wanted
            )
    if out_path is not None:
        click.echo(f"wrote {written} records to {out_path}", err=True)
    if unlabelled:
        click.echo(f"{unlabelled} clips have no label (errors above)", err=True)


def _job_or_fail(cmd: CommandContext, session: Any, job_id: str | None) -> JobSummary:
    job = find_job(session, job_id)
    if job is None:
        missing = f"no job {job_id}" if job_id else "no jobs yet"
        raise click.ClickException(f"{missing} in {cmd.shown_database}")
    return job_summary(session, job, limit=0)


def _pages(cmd: CommandContext, job_id: str) -> Iterator[dict[str, Any]]:
    """Every record of the job, read a page per transaction (a large job never sits in
    memory at once)."""
    offset = 0
    while True:

        def page(session: Any, start: int = offset) -> list[dict[str, Any]]:
            job = session.get_one(Job, job_id)
            return job_results(session, job, offset=start, limit=RESULTS_PAGE)[0]

        records = cmd.app.transaction(page)
        yield from records
        if len(records) < RESULTS_PAGE:
            return
        offset += len(records)
