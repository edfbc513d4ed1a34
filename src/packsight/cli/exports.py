"""Clip records out of the CLI: JSON lines, CSV or an aligned table, filtered by video,
operation or confidence. A clip without a label is reported on stderr, not exported. Or a job's
timelines as an OpenPack annotation folder (packsight.pipeline.openpack_export)."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from packsight.cli.running import one_line_errors
from packsight.labels.openpack_export import ExportError, prepare_folder
from packsight.pipeline.context import Context
from packsight.pipeline.openpack_export import export_openpack
from packsight.pipeline.results import JobSummary

CSV_COLUMNS = (
    "clip_id",
    "bucket",
    "video_key",
    "start_frame",
    "end_frame",
    "start_s",
    "end_s",
    "dominant_operation",
    "segment_start_frame",
    "segment_end_frame",
    "anticipated_next_operation",
    "confidence",
)


@dataclass(frozen=True)
class ClipFilter:
    video_key: str | None = None
    operation: str | None = None
    below: float | None = None  # confidence

    def admits(self, record: dict[str, Any]) -> bool:
        if self.video_key is not None and record["video_key"] != self.video_key:
            return False
        if self.operation is not None and record["dominant_operation"] != self.operation:
            return False
        return self.below is None or record["confidence"] < self.below


def write_records(
    records: Iterable[dict[str, Any]], out: IO[str], *, fmt: str, wanted: ClipFilter
) -> tuple[int, int]:
    """Write the labelled records `wanted` admits; (written, clips without a label seen)."""
    writer = csv.DictWriter(out, CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = unlabelled = 0
    for record in records:
        if record["error"] is not None:
            if wanted.video_key in (None, record["video_key"]):
                unlabelled += 1
                where = f"{record['clip_id']} ({record['video_key']})"
                click.echo(f"{where}: {record['error']}", err=True)
            continue
        if not wanted.admits(record):
            continue
        if writer is not None:
            writer.writerow(csv_row(record))
        elif fmt == "jsonl":
            out.write(json.dumps(record) + "\n")
        else:
            out.write(table_row(record) + "\n")
        written += 1
    return written, unlabelled


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    segment = record["temporal_segment"]
    row = {column: record.get(column) for column in CSV_COLUMNS}
    row["segment_start_frame"] = segment["start_frame"]
    row["segment_end_frame"] = segment["end_frame"]
    return row


def table_row(record: dict[str, Any]) -> str:
    seg = record["temporal_segment"]
    return (
        f"{record['clip_id']:<28} {record['dominant_operation']:<22} "
        f"{seg['start_frame']:>4}-{seg['end_frame']:<4} "
        f"{record['anticipated_next_operation']:<22} {record['confidence']:.3f}  "
        f"{record['video_key']} {record['start_s']:.1f}-{record['end_s']:.1f}s"
    )


def check_out(fmt: str, out: Path | None, *, raw: bool, clip_filters: tuple[object, ...]) -> None:
    """The options fit the format; for openpack, --out is made a new, empty folder."""
    if fmt != "openpack":
        if raw:
            raise click.UsageError("--raw goes with --format openpack")
        if out is not None and out.is_dir():
            raise click.BadParameter(f"{out} is a folder (a file is wanted)", param_hint="'--out'")
        return
    if out is None:
        raise click.UsageError("--format openpack writes a folder: give --out DIR")
    if any(f is not None for f in clip_filters):
        raise click.UsageError(
            "--operation and --below filter clips; --format openpack exports whole timelines"
        )
    try:
        prepare_folder(out)
    except ExportError as exc:
        raise click.BadParameter(str(exc), param_hint="'--out'") from exc


def export_openpack_here(
    app: Context, summary: JobSummary, out: Path, *, raw: bool, video_key: str | None
) -> None:
    """Write the job's timelines into `out`, a line per video; exit 1 if one was skipped."""
    answers = "raw answers" if raw else "timelines"
    click.echo(f"job {summary.id}: {answers} of {summary.model_version}", err=True)
    with one_line_errors():
        try:
            outcome = export_openpack(app, job_id=summary.id, out=out, raw=raw, video_key=video_key)
        except OSError as exc:
            raise click.ClickException(f"cannot write into {out}: {exc}") from exc
    for key, exported, _ in outcome.videos:
        click.echo(f"{exported.path.relative_to(out)}\t{exported.rows} rows\t{key}")
    for reason in outcome.skipped:
        click.echo(f"skipped: {reason}", err=True)
    if not outcome.videos:
        wanted = f"video {video_key!r}" if video_key else "video"
        raise click.ClickException(f"job {summary.id} has no labelled {wanted} to export")
    smoothed = any(s for *_, s in outcome.videos)
    how = "smoothed with the version's prior" if smoothed else "no prior: the raw answers"
    how = "the clips' raw answers" if raw else how
    click.echo(f"wrote {len(outcome.videos)} videos ({how}) to {out}", err=True)
    if gaps := sum(1 for _, exported, _ in outcome.videos if exported.uncovered):
        click.echo(f"{gaps} videos have frames without an answer: imported as background", err=True)
    assert outcome.sessions is not None, "written with the first video"
    command = ["packsight", "labels", "import", str(out), "--sessions", str(outcome.sessions)]
    command += ["--bucket", outcome.bucket, "--unverified"]
    click.echo(f"import as labels with: {shlex.join(command)}", err=True)
    if outcome.skipped:
        sys.exit(1)
