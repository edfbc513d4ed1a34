"""`packsight label` and `packsight results`: label an archive, read what came of it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import drive_here, one_line_errors
from packsight.pipeline.results import JobSummary, find_job, job_results, job_summary
from packsight.pipeline.submission import JobRequest, submit_job

FOLLOW_EVERY_S = 2.0


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
    with one_line_errors():
        submission = submit_job(cmd.app, JobRequest(bucket, prefix=prefix))
    listed = "" if submission.listed else " so far (listing the rest)"
    click.echo(
        f"job {submission.job_id}: {submission.items} videos{listed}, "
        f"labelled in the {cmd.settings.taxonomy} taxonomy"
    )
    started = time.monotonic()
    if cmd.app.embedded:
        drive_here(cmd.app, job_id=submission.job_id)
    elif wait:
        _follow(cmd, submission.job_id)
    summary = _summary(cmd, submission.job_id)
    _print_summary(summary, time.monotonic() - started)
    if summary.failed:
        sys.exit(1)


def _summary(cmd: CommandContext, job_id: str, *, failed_only: bool = False) -> JobSummary:
    def read(session: Any) -> JobSummary:
        job = find_job(session, job_id)
        if job is None:
            raise click.ClickException(f"job {job_id} is gone from {cmd.shown_database}")
        return job_summary(session, job, failed_only=failed_only, limit=0 if failed_only else None)

    with one_line_errors():
        return cmd.app.transaction(read)


def _follow(cmd: CommandContext, job_id: str) -> None:
    while not (summary := _summary(cmd, job_id, failed_only=True)).final:
        items = " ".join(f"{k}={v}" for k, v in summary.counts.items.items() if v)
        clips = summary.counts.clips
        click.echo(
            f"  {summary.state}: items {items}; clips {clips['labelled']}/{clips['total']}",
            err=True,
        )
        time.sleep(FOLLOW_EVERY_S)


def _print_summary(summary: JobSummary, elapsed: float) -> None:
    click.echo(f"\n{'video':<44} {'state':<10} {'clips':>5} {'labelled':>8}  error")
    for item in summary.items:
        clips = item.clips if item.clips is not None else "-"
        error = (item.error or "")[:100]
        click.echo(f"{item.key[-44:]:<44} {item.state:<10} {clips:>5} {item.labelled:>8}  {error}")
    c = summary.counts.clips
    click.echo(
        f"\njob {summary.id} {summary.state}: {summary.counts.items_total} videos, "
        f"{c['total']} clips, {c['labelled']} labelled, {c['failed']} failed, {elapsed:.1f}s"
    )
    if summary.error:
        click.echo(f"job error: {summary.error}")


@click.command()
@click.option("--job", "job_id", help="Job id (default: the latest job).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl")
@pass_command_context
def results(cmd: CommandContext, job_id: str | None, fmt: str) -> None:
    """Print a job's per-clip predictions."""

    def read(session: Any) -> tuple[JobSummary, list[dict[str, Any]]]:
        job = find_job(session, job_id)
        if job is None:
            raise click.ClickException("no such job" if job_id else "no jobs yet")
        return job_summary(session, job, limit=0), job_results(session, job)[0]

    with one_line_errors():
        summary, records = cmd.app.transaction(read)
    click.echo(f"job {summary.id}: operations of the {summary.taxonomy} taxonomy", err=True)
    failed = [r for r in records if r["error"] is not None]
    for record in records:
        if record["error"] is not None:
            click.echo(f"{record['clip_id']} ({record['video_key']}): {record['error']}", err=True)
        elif fmt == "jsonl":
            click.echo(json.dumps(record))
        else:
            click.echo(_table_row(record))
    if failed:
        click.echo(f"{len(failed)} clips have no label (errors above)", err=True)


def _table_row(record: dict[str, Any]) -> str:
    seg = record["temporal_segment"]
    return (
        f"{record['clip_id']:<28} {record['dominant_operation']:<22} "
        f"{seg['start_frame']:>4}-{seg['end_frame']:<4} "
        f"{record['anticipated_next_operation']:<22} {record['confidence']:.3f}  "
        f"{record['video_key']} {record['start_s']:.1f}-{record['end_s']:.1f}s"
    )
