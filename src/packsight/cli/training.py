"""`packsight train`: fine-tune, evaluate and maybe promote an adapter, and follow the run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from packsight.cli.context import CommandContext, pass_command_context
from packsight.cli.progress import Progress, Reading
from packsight.cli.running import drive_here, one_line_errors
from packsight.models.tables.training_runs import FINAL_RUN_STATES, TrainingRun, TrainingRunState
from packsight.models.training_runs import ActiveRunError
from packsight.pipeline.training_runs import start_training

FOLLOW_EVERY_S = 5.0


@click.command()
@click.option("--bucket", help="Train on this bucket's verified labels only (default: all).")
@click.option(
    "--config",
    "config_json",
    default="{}",
    help='TrainingConfig overrides as JSON, e.g. \'{"max_steps": 200, "lr": 2e-4}\'.',
)
@click.option("--wait/--no-wait", default=True, help="Follow the run until it ends.")
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the run's results.json here.",
)
@pass_command_context
def train(
    cmd: CommandContext,
    bucket: str | None,
    config_json: str,
    wait: bool,
    results_path: Path | None,
) -> None:
    """Fine-tune an adapter on the verified labels, evaluate it and promote it if it wins."""
    config = _config(config_json)
    cmd.ready_database()
    if cmd.settings.embedded:
        click.echo(f"embedded mode: {cmd.shown_database}, training in this process")
    with one_line_errors(ActiveRunError):
        run_id = start_training(cmd.app, trigger="manual", config=config, bucket=bucket)
    click.echo(f"training run {run_id}: {cmd.settings.model}, {cmd.settings.taxonomy} taxonomy")
    with Progress(lambda: _reading(cmd, run_id), unit="steps"):
        if cmd.app.embedded:
            drive_here(cmd.app, training_run_id=run_id)
        run = _follow(cmd, run_id, wait=wait)
    _print_outcome(run)
    if run.results is not None and results_path is not None:
        results_path.write_text(json.dumps(run.results, indent=2) + "\n")
        click.echo(f"wrote {results_path}")
    if run.state == TrainingRunState.FAILED:
        sys.exit(1)


def _config(config_json: str) -> dict[str, Any]:
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--config") from exc
    if not isinstance(config, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--config")
    return config


def _reading(cmd: CommandContext, run_id: str) -> Reading:
    run = cmd.app.try_transaction(lambda session: session.get(TrainingRun, run_id), quiet=True)
    if run is None:
        return 0, None, "waiting for the database"
    return run.step, run.total_steps, _doing(run) or run.state


def _doing(run: TrainingRun) -> str:
    """A few words on the run's phase: videos read, the latest loss, the model being scored."""
    now = run.progress or {}
    phase = now.get("phase")
    if run.state in FINAL_RUN_STATES or phase is None:
        return ""
    if phase == "gathering":
        return f"reading videos {now['videos_done']}/{now['videos']}"
    if phase == "evaluating":
        return (
            f"evaluating {now['model']} on {now['split']} {now['clips_done']}/{now['clips']} "
            f"clips ({now['evaluation']} of {now['evaluations']})"
        )
    loss = now.get("loss")
    return f"training, loss {loss:.4f}" if loss is not None else "training"


def _follow(cmd: CommandContext, run_id: str, *, wait: bool) -> TrainingRun:
    last = None
    while True:
        with one_line_errors():
            run = cmd.app.transaction(lambda session: session.get_one(TrainingRun, run_id))
        doing = _doing(run)
        progress = f"{run.state} step {run.step}/{run.total_steps or '?'}" + (
            f": {doing}" if doing else ""
        )
        if progress != last and not Progress.wanted():  # else the bar shows it
            click.echo(f"  {progress}", err=True)
            last = progress
        if run.state in FINAL_RUN_STATES or not wait:
            return run
        time.sleep(FOLLOW_EVERY_S)


def _print_outcome(run: TrainingRun) -> None:
    if run.state == TrainingRunState.FAILED:
        click.echo(f"failed: {run.error}", err=True)
    if run.state != TrainingRunState.SUCCEEDED:
        return
    results = run.results or {}
    blocks = [(name, results.get(name)) for name in ("base_model", "finetuned_model")]
    blocks += [(f"baseline {n}", b) for n, b in (results.get("baselines") or {}).items()]
    blocks.append(("champion_model", results.get("champion_model")))
    # The same answers smoothed into whole-video timelines with the procedure's prior.
    blocks += [(f"{n} +prior", b) for n, b in (results.get("smoothed") or {}).items()]
    for block, scores in blocks:
        if scores:
            metrics = "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
            click.echo(f"{block:<22} {metrics}  ({scores['clips']} clips)  {scores['model']}")
    click.echo(f"{run.decision}: {run.decision_reason}")
    click.echo(f"artifacts: {run.artifacts_uri}")
