"""`packsight review ...`: the clips most worth a person's check, for reading or for Label
Studio (whose annotations come back with `packsight labels import --format label-studio`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import one_line_errors
from packsight.labels.label_studio import labeling_config
from packsight.labels.taxonomy import TaxonomyError, load_taxonomy
from packsight.pipeline.label_studio import label_studio_tasks
from packsight.pipeline.results import find_job
from packsight.pipeline.review import ReviewQueue, review_queue


@click.group()
def review() -> None:
    """The review queue: which clips a person should check, and Label Studio tasks for them."""


@review.command("export")
@click.argument("source", required=False)
@click.option("--job", "job_id", help="Only this job's videos (and its model version).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "everything", is_flag=True, help="Every labelled clip, ranked (no limit).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "label-studio"]),
    default="table",
    show_default=True,
    help="label-studio: tasks to import into a project made with `review label-studio-config`.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write here instead of stdout.",
)
@pass_command_context
def export_review(
    cmd: CommandContext,
    source: str | None,
    job_id: str | None,
    limit: int,
    everything: bool,
    fmt: str,
    out: Path | None,
) -> None:
    """The clips of SOURCE (a local folder or s3://bucket) or of --job most worth a check:
    lowest confidence, smallest margin between the two likeliest operations, the prior or
    another model version disagreeing. Clips people have labelled are left out."""
    if source is None and job_id is None:
        raise click.UsageError("give SOURCE (a folder or s3://bucket) or --job")
    bucket = cmd.source(source)[0] if source is not None else None
    cmd.ready_database()

    def read(session: Session) -> tuple[ReviewQueue, Any]:
        job = None
        if job_id is not None:
            job = find_job(session, job_id)
            if job is None:
                raise click.ClickException(f"no job {job_id!r}")
            if bucket is not None and bucket != job.bucket:
                raise click.ClickException(f"job {job.id} labelled bucket {job.bucket!r}")
        queue = review_queue(
            session,
            bucket=bucket or (job.bucket if job else ""),
            job=job,
            limit=None if everything else limit,
        )
        if fmt == "label-studio":
            return queue, label_studio_tasks(cmd.app, queue.clips)
        if fmt == "json":
            return queue, [c.to_json() for c in queue.clips]
        return queue, "\n".join(_row(c.to_json()) for c in queue.clips)

    with one_line_errors():
        queue, document = cmd.app.transaction(read)
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    elif text:
        click.echo(text)
    where = f" into {out}" if out is not None else ""
    click.echo(
        f"{len(queue.clips)} clips to review{where} ({queue.considered} labelled clips in "
        f"{queue.bucket!r}, {queue.reviewed} already labelled by people)",
        err=True,
    )


def _row(clip: dict[str, Any]) -> str:
    return (
        f"{clip['score']:>5.2f}  {clip['clip_id']:<28} {clip['dominant_operation']:<22} "
        f"{clip['video_key']} {clip['start_s']:.1f}-{clip['end_s']:.1f}s  "
        + "; ".join(clip["reasons"])
    )


@review.command("label-studio-config")
@click.option("--taxonomy", help="Its operations become the labels (default: the set taxonomy).")
@pass_command_context
def label_studio_config(cmd: CommandContext, taxonomy: str | None) -> None:
    """Print the labelling configuration of a Label Studio project for packsight's tasks."""
    try:
        known = load_taxonomy(taxonomy or cmd.settings.taxonomy)
    except TaxonomyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(labeling_config(known.operations, taxonomy=known.name), nl=False)
