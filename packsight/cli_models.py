"""`packsight models ...`: which model version serves new jobs, its metrics, rollback."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """Model versions (the serving one marked *) with their test metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlalchemy import select

    from packsight.cli import _settings
    from packsight.models.db import session_scope
    from packsight.models.tables import ModelVersion

    with session_scope(_settings().resolved_database_url) as session:
        rows = list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
        if not rows:
            click.echo("no model versions yet")
        for version in rows:
            test = (version.metrics or {}).get("test") or {}
            mark = "*" if version.is_serving else " "
            click.echo(f"{mark} {version.id:>4}  {version.name}  {_scores(test)}")
            frames = (version.settings or {}).get("frames")
            if frames:
                click.echo(
                    f"        trained on {frames['frames_per_clip']} frames per "
                    f"{frames['clip_seconds']:g} s clip at {frames['max_side']} px"
                )
            for name, baseline in (test.get("baselines") or {}).items():
                click.echo(f"        baseline {name}: {_scores(baseline)}")


def _scores(block: dict) -> str:
    """A metrics block as "OCA 0.600  tIoU@0.5 1.000 ..." (on N test clips)."""
    shown = "  ".join(f"{k} {v:.3f}" for k, v in block.items() if isinstance(v, float))
    return f"{shown}  ({block['clips']} clips)" if "clips" in block else shown


@models.command("rollback")
@click.argument("version_id", type=int)
def rollback_version(version_id: int) -> None:
    """Stop serving VERSION_ID and serve again the version it was promoted over."""
    from packsight.cli import _settings
    from packsight.models.db import session_scope
    from packsight.models.evaluations import UnknownModelVersionError
    from packsight.models.promotions import RollbackError, rollback

    try:
        with session_scope(_settings().resolved_database_url) as session:
            restored = rollback(session, version_id)
            click.echo(f"serving {restored.id}: {restored.name}")
    except (UnknownModelVersionError, RollbackError) as exc:
        raise click.ClickException(str(exc)) from exc
