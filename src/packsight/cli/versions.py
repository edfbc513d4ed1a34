"""`packsight models ...`: which model version serves new jobs, its metrics, rollback.

(A model version is a base VLM plus an adapter; the command keeps the name users know.)"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.running import one_line_errors
from packsight.models.evaluations import UnknownModelVersionError
from packsight.models.promotions import RollbackError, rollback
from packsight.models.tables.versions import ModelVersion


@click.group("models", invoke_without_command=True)
@click.pass_context
def versions(click_ctx: click.Context) -> None:
    """Model versions (the serving one marked *) with their test metrics."""
    if click_ctx.invoked_subcommand is not None:
        return
    cmd = click_ctx.ensure_object(CommandContext)
    cmd.ready_database()

    def read(session: Session) -> list[str]:
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id))
        return [line for version in rows for line in _lines(version)]

    with one_line_errors():
        lines = cmd.app.transaction(read)
    click.echo("\n".join(lines) if lines else "no model versions yet")


def _lines(version: ModelVersion) -> list[str]:
    test = (version.metrics or {}).get("test") or {}
    mark = "*" if version.is_serving else " "
    lines = [f"{mark} {version.id:>4}  {version.name}  {_scores(test)}"]
    frames = (version.settings or {}).get("frames")
    if frames:
        lines.append(
            f"        trained on {frames['frames_per_clip']} frames per "
            f"{frames['clip_seconds']:g} s clip at {frames['max_side']} px"
        )
    for name, baseline in (test.get("baselines") or {}).items():
        lines.append(f"        baseline {name}: {_scores(baseline)}")
    return lines


def _scores(block: dict[str, Any]) -> str:
    """A metrics block as "OCA 0.600  tIoU@0.5 1.000 ..." (on N test clips)."""
    shown = "  ".join(f"{k} {v:.3f}" for k, v in block.items() if isinstance(v, float))
    return f"{shown}  ({block['clips']} clips)" if "clips" in block else shown


@versions.command("rollback")
@click.argument("version_id", type=int)
@pass_command_context
def rollback_version(cmd: CommandContext, version_id: int) -> None:
    """Stop serving VERSION_ID and serve again the version it was promoted over."""
    cmd.ready_database()
    with one_line_errors(UnknownModelVersionError, RollbackError):
        restored = cmd.app.transaction(lambda session: _shown(rollback(session, version_id)))
    click.echo(f"serving {restored}")


def _shown(version: ModelVersion) -> str:
    return f"{version.id}: {version.name}"
