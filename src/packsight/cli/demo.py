"""`packsight synth|tiny-model`: a synthetic archive and a tiny local model, for demos and
tests on machines that cannot download anything."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import click

from packsight.labels.taxonomy import TaxonomyError, load_taxonomy


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--videos", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--layout",
    type=click.Choice(["packsight", "openpack"]),
    default="packsight",
    show_default=True,
    help="openpack: U0101/kinect/S0100.mp4 with a sidecar S0100.json, no manifest, as "
    "OpenPack lays out its archive.",
)
@click.option(
    "--taxonomy",
    "taxonomy_name",
    help="Operations to annotate in (default: openpack for --layout openpack, else assignment).",
)
def synth(out_dir: Path, videos: int, seed: int, layout: str, taxonomy_name: str | None) -> None:
    """Write a synthetic packaging-video archive with OpenPack-style annotations."""
    from packsight.video.synth import write_synthetic_archive

    name = taxonomy_name or ("openpack" if layout == "openpack" else "assignment")
    try:
        taxonomy = load_taxonomy(name)
    except TaxonomyError as exc:
        raise click.BadParameter(str(exc), param_hint="--taxonomy") from exc
    written = write_synthetic_archive(
        out_dir,
        videos=videos,
        seed=seed,
        taxonomy=taxonomy,
        layout=cast(Literal["packsight", "openpack"], layout),
    )
    for video in written:
        click.echo(f"{video.key}\t{video.frame_count / video.fps:.1f}s\t{len(video.segments)} ops")
    click.echo(
        f"wrote {len(written)} videos to {out_dir} ({layout} layout, {taxonomy.name} taxonomy)"
    )


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--family", type=click.Choice(["qwen2_vl", "qwen2_5_vl"]), default="qwen2_vl")
@click.option(
    "--size",
    type=click.Choice(["default", "learnable"]),
    default="default",
    help="learnable: the variant fine-tuning can teach the synthetic archive's operations.",
)
def tiny_model(out_dir: Path, family: str, size: str) -> None:
    """Build a tiny random-weight Qwen2-VL locally (for demos and tests; no downloads)."""
    from packsight.vlm.tiny import build_tiny_model  # torch: loaded only for this command

    path = build_tiny_model(
        out_dir,
        family=cast(Literal["qwen2_vl", "qwen2_5_vl"], family),
        size=cast(Literal["default", "learnable"], size),
    )
    click.echo(str(path))
