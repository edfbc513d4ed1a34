"""`packsight labels ...`: ground-truth labels from annotation files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import one_line_errors
from packsight.labels.annotations import (
    AnnotationError,
    ArchiveAnnotations,
    load_sessions,
    locate_sessions,
    read_archive,
)
from packsight.labels.mappings import load_mapping, map_archive
from packsight.labels.taxonomy import TaxonomyError, load_taxonomy
from packsight.pipeline.label_import import import_annotations
from packsight.pipeline.label_studio import import_label_studio
from packsight.video.decode import VideoDecodeError, probe_video


@click.group()
def labels() -> None:
    """Ground-truth labels: import annotations (corrections come through the API)."""


@labels.command("import")
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openpack", "label-studio"]),
    default="openpack",
    show_default=True,
    help="openpack: ROOT is an archive folder of operation CSVs; label-studio: ROOT is a Label "
    "Studio JSON export of tasks from `packsight review export --format label-studio`, whose "
    "annotations become verified corrections.",
)
@click.option(
    "--bucket",
    help="Bucket the videos are (to be) labelled in; default: ROOT itself, as a local folder "
    "(`packsight label ROOT` labels the same bucket).",
)
@click.option("--prefix", default="", help="Prepended to every video key (a folder).")
@click.option(
    "--sessions",
    "sessions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="sessions.csv (user,session,video_key,video_start,fps,frame_count), for videos "
    "without a sidecar <stem>.json; default ROOT/manifest.json when there is one.",
)
@click.option("--map", "mapping_name", help="Map to another taxonomy, e.g. openpack-to-assignment.")
@click.option(
    "--taxonomy",
    help="Taxonomy of the CSVs (default: the manifest's or sessions table's, else openpack).",
)
@click.option(
    "--verified/--unverified",
    default=True,
    show_default=True,
    help="Whether the annotations were checked by people; nightly training uses verified "
    "labels only (e.g. import machine pre-labels with --unverified).",
)
@pass_command_context
def import_labels(
    cmd: CommandContext,
    root: Path,
    fmt: str,
    bucket: str | None,
    prefix: str,
    sessions_path: Path | None,
    mapping_name: str | None,
    taxonomy: str | None,
    verified: bool,
) -> None:
    """Import OpenPack operation annotations under ROOT (or a Label Studio export) as labels;
    exits 1 if a file or video is rejected."""
    if fmt == "label-studio":
        if root.is_dir():
            raise click.BadParameter("a Label Studio export is a JSON file", param_hint="ROOT")
        _import_label_studio(cmd, root)
        return
    if not root.is_dir():
        raise click.BadParameter("an OpenPack archive is a folder", param_hint="ROOT")
    annotations = _read(root, sessions_path, mapping_name, taxonomy)
    bucket = bucket or cmd.local_bucket(root, hint="ROOT")
    cmd.ready_database()
    with one_line_errors():
        outcome = import_annotations(
            cmd.app, annotations, bucket=bucket, prefix=prefix, verified=verified
        )
    for video in outcome.imported:
        summary = ", ".join(f"{op} {n}" for op, n in video.operations)
        click.echo(f"{video.key}\t{video.intervals} intervals\t{summary}")
    click.echo(
        f"imported {len(outcome.imported)} videos into bucket {bucket!r} as {outcome.taxonomy}"
    )
    for session in outcome.unannotated:
        click.echo(f"no annotations for {session}", err=True)
    for reason in outcome.rejected:
        click.echo(f"rejected: {reason}", err=True)
    if outcome.rejected:
        sys.exit(1)


def _import_label_studio(cmd: CommandContext, path: Path) -> None:
    """The bucket, video and taxonomy of each span come from the task it was drawn on."""
    cmd.ready_database()
    with one_line_errors():
        try:
            export = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.ClickException(f"{path}: not a readable JSON file ({exc})") from exc
        outcome = import_label_studio(cmd.app, export)
    for video, spans in outcome.videos.items():
        click.echo(f"{video}\t{spans} reviewed spans")
    click.echo(f"imported {len(outcome.videos)} videos' reviews as verified corrections")
    for reason in outcome.rejected:
        click.echo(f"rejected: {reason}", err=True)
    if outcome.rejected:
        sys.exit(1)


def _read(
    root: Path, sessions_path: Path | None, mapping_name: str | None, taxonomy: str | None
) -> ArchiveAnnotations:
    """The archive's annotations, in the mapping's taxonomy when one is given."""
    manifest = root / "manifest.json"
    try:
        given = sessions_path or (manifest if manifest.is_file() else None)
        table = load_sessions(given) if given else None
        table = locate_sessions(root, table, frame_count=lambda p: probe_video(p).frame_count)
        mapping = load_mapping(mapping_name) if mapping_name else None
        name = taxonomy or (mapping.source if mapping else None) or table.taxonomy or "openpack"
        annotations = read_archive(root, table, taxonomy=load_taxonomy(name))
        return map_archive(annotations, mapping) if mapping else annotations
    except (AnnotationError, TaxonomyError, VideoDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
