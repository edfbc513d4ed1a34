"""`packsight labels ...`: ground-truth labels from annotation files."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def labels() -> None:
    """Ground-truth labels: import annotations (corrections come through the API)."""


@labels.command("import")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
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
@click.option("--taxonomy", help="Taxonomy of the CSVs (default: the manifest's, else openpack).")
@click.option(
    "--verified/--unverified",
    default=True,
    show_default=True,
    help="Whether the annotations were checked by people; nightly training uses verified "
    "labels only (e.g. import machine pre-labels with --unverified).",
)
def import_labels(
    root: Path,
    bucket: str | None,
    prefix: str,
    sessions_path: Path | None,
    mapping_name: str | None,
    taxonomy: str | None,
    verified: bool,
) -> None:
    """Import OpenPack operation annotations under ROOT as labels; exits 1 if a file is rejected."""
    from collections import Counter

    from packsight.annotations import (
        AnnotationError,
        load_mapping,
        load_sessions,
        locate_sessions,
        read_archive,
    )
    from packsight.models.db import session_scope
    from packsight.models.labels import LabelError, replace_video_labels
    from packsight.models.migrate import upgrade_database
    from packsight.taxonomy import TaxonomyError, load_taxonomy
    from packsight.video import VideoDecodeError, probe_video

    manifest = root / "manifest.json"
    try:
        table = (
            load_sessions(sessions_path or manifest)
            if sessions_path or manifest.is_file()
            else None
        )
        table = locate_sessions(root, table, frame_count=lambda p: probe_video(p).frame_count)
        mapping = load_mapping(mapping_name) if mapping_name else None
        name = taxonomy or (mapping.source if mapping else None) or table.taxonomy or "openpack"
        report = read_archive(root, table, taxonomy=load_taxonomy(name), mapping=mapping)
    except (AnnotationError, TaxonomyError, VideoDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    from packsight.cli import _local_bucket, _settings

    settings = _settings()
    if bucket is None:
        bucket = _local_bucket(settings, root, hint="ROOT")
    if settings.embedded:
        upgrade_database(settings.resolved_database_url)
    stored = mapping.target if mapping else load_taxonomy(name).name
    rejected = list(report.rejected)
    with session_scope(settings.resolved_database_url) as session:
        for video, path, intervals in report.videos:
            key = f"{prefix.rstrip('/')}/{video.video_key}" if prefix else video.video_key
            try:
                with session.begin_nested():  # a refused video must not undo the others
                    replace_video_labels(
                        session,
                        bucket=bucket,
                        video_key=key,
                        taxonomy=stored,
                        intervals=intervals,
                        subject=video.user,
                        session_name=video.session,
                        verified=verified,
                    )
            except LabelError as exc:
                rejected.append((path, f"{path}: {exc}"))
                continue
            ops = Counter(i.operation for i in intervals)
            summary = ", ".join(f"{op} {n}" for op, n in ops.most_common())
            click.echo(f"{key}\t{len(intervals)} intervals\t{summary}")
    imported = len(report.videos) - (len(rejected) - len(report.rejected))
    click.echo(f"imported {imported} videos into bucket {bucket!r} as {stored}")
    for video in report.unannotated:
        click.echo(f"no annotations for {video.user}/{video.session}", err=True)
    for _, reason in rejected:
        click.echo(f"rejected: {reason}", err=True)
    if rejected:
        sys.exit(1)
