"""`packsight timeline`: a labelled video's operations in order, smoothed with the prior."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import one_line_errors
from packsight.pipeline.timelines import NoTimelineError, VideoTimeline, find_video, video_timeline


@click.command()
@click.argument("video_key")
@click.option("--bucket", help="The video's bucket (default: any; the latest recording).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the timeline (with the raw answers and any labels) into this PNG.",
)
@pass_command_context
def timeline(
    cmd: CommandContext, video_key: str, bucket: str | None, fmt: str, png_path: Path | None
) -> None:
    """Print VIDEO_KEY's timeline: ordered segments with start and end, operation, confidence."""
    cmd.ready_database()

    def read(session: Any) -> tuple[VideoTimeline, dict[str, Any], bytes | None]:
        video = find_video(session, video_key, bucket)
        if video is None:
            where = f" in bucket {bucket!r}" if bucket else ""
            raise click.ClickException(f"no labelled video {video_key!r}{where}")
        found = video_timeline(session, video)
        return found, found.to_json(), found.png() if png_path else None

    with one_line_errors(NoTimelineError):
        found, document, png = cmd.app.transaction(read)
    if fmt == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        how = "smoothed with its prior" if found.prior else "its raw answers (no prior)"
        click.echo(f"{document['bucket']}/{document['key']}: {document['model_version']}, {how}")
        header = f"{'start_s':>9} {'end_s':>9}  {'operation':<28} {'confidence':>10} {'clips':>5}"
        click.echo(header)
        for s in document["segments"]:
            click.echo(
                f"{s['start_s']:>9.2f} {s['end_s']:>9.2f}  {s['operation']:<28} "
                f"{s['confidence']:>10.3f} {s['clips']:>5}"
            )
    if png is not None and png_path is not None:
        png_path.write_bytes(png)
        click.echo(f"wrote {png_path}", err=True)
