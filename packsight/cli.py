"""The `packsight` command: synthesise an archive, label it, read results, run services."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from packsight.settings import get_settings

    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"PACKSIGHT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from exc


@click.group()
def main() -> None:
    """packsight: label warehouse packaging video with a fine-tuned vision-language model."""


@main.command()
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
    from packsight.synth import write_synthetic_archive
    from packsight.taxonomy import TaxonomyError, load_taxonomy

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
        layout=layout,  # type: ignore[arg-type]
    )
    for video in written:
        click.echo(f"{video.key}\t{video.frame_count / video.fps:.1f}s\t{len(video.segments)} ops")
    click.echo(
        f"wrote {len(written)} videos to {out_dir} ({layout} layout, {taxonomy.name} taxonomy)"
    )


@main.command("tiny-model")
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
    from packsight.vlm.tiny import build_tiny_model

    click.echo(str(build_tiny_model(out_dir, family=family, size=size)))  # type: ignore[arg-type]


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from packsight.models.migrate import upgrade_database

    settings = _settings()
    upgrade_database(settings.resolved_database_url)
    click.echo(f"database at head: {_redacted(settings.resolved_database_url)}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _parse_source(source: str) -> tuple[str, str, Path | None]:
    """(bucket, prefix, local folder) of s3://bucket/prefix or of a local folder (whose name is
    its bucket)."""
    from packsight.storage import InvalidKeyError, validate_bucket, validate_prefix

    if source.startswith("s3://"):
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        if not bucket:
            raise click.BadParameter("s3:// source needs a bucket name", param_hint="SOURCE")
        try:
            validate_bucket(bucket)
            validate_prefix(prefix)
        except InvalidKeyError as exc:
            raise click.BadParameter(str(exc), param_hint="SOURCE") from exc
        os.environ.setdefault("PACKSIGHT_STORAGE", "s3")
        return bucket, prefix, None
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        raise click.BadParameter(f"{source!r} is not a folder or s3:// URL", param_hint="SOURCE")
    if os.environ.get("PACKSIGHT_STORAGE", "local") != "local":
        raise click.UsageError("a local folder needs PACKSIGHT_STORAGE=local")
    return folder.name, "", folder


def _drive(ctx, **subject: str) -> None:  # type: ignore[no-untyped-def]
    """Run the new work here (the embedded default); an outage that outlasts the retry window
    stops the command with one line, the work kept for the next run of it."""
    from packsight.faults import TransientError
    from packsight.pipeline.embedded import drive

    try:
        drive(ctx, **subject)
    except TransientError as exc:
        raise click.ClickException(
            f"{exc}; what is done is kept: run the same command again to finish"
        ) from exc


def _local_bucket(settings, folder: Path, hint: str = "SOURCE") -> str:  # type: ignore[no-untyped-def]
    """The bucket a local folder is under the local storage (linked there by name once)."""
    from packsight.storage import InvalidKeyError, link_local_bucket

    try:
        return link_local_bucket(settings.resolved_local_root, folder)
    except InvalidKeyError as exc:
        raise click.BadParameter(
            f"{str(folder)!r} cannot be a bucket: {exc}", param_hint=hint
        ) from exc


def _context(settings):  # type: ignore[no-untyped-def]
    """The application layer's context: on the embedded default this process runs the work
    (and waits out outages like a worker); with a broker it only submits and follows."""
    from packsight.pipeline.context import Context
    from packsight.workers.broker import publisher_for

    return Context(settings, publisher_for(settings), patient=settings.embedded)


@main.command()
@click.argument("source")
@click.option("--wait/--no-wait", default=True, help="Follow the job until it ends.")
def label(source: str, wait: bool) -> None:
    """Label every video under SOURCE (a local folder or s3://bucket/prefix)."""
    from packsight.faults import TransientError
    from packsight.models.migrate import upgrade_database
    from packsight.pipeline.dispatch import BrokerUnavailableError
    from packsight.pipeline.submission import JobRequest, submit_job
    from packsight.storage import StorageError

    bucket, prefix, folder = _parse_source(source)
    settings = _settings()
    if folder is not None:
        bucket = _local_bucket(settings, folder)
    if settings.embedded:
        upgrade_database(settings.resolved_database_url)
        click.echo(f"embedded mode: {_redacted(settings.resolved_database_url)}, in-process tasks")
    ctx = _context(settings)
    try:
        submission = submit_job(ctx, JobRequest(bucket, prefix=prefix))
    except (ValueError, StorageError, BrokerUnavailableError, TransientError) as exc:
        raise click.ClickException(str(exc)) from exc
    listed = "" if submission.listed else " so far (listing the rest)"
    click.echo(
        f"job {submission.job_id}: {submission.items} videos{listed}, "
        f"labelled in the {settings.taxonomy} taxonomy"
    )
    started = time.monotonic()
    if ctx.embedded:
        _drive(ctx, job_id=submission.job_id)
    elif wait:
        _follow(settings, submission.job_id)
    state = _print_summary(settings, submission.job_id, time.monotonic() - started)
    if state in ("failed", "partially_failed"):
        sys.exit(1)


def _follow(settings, job_id: str) -> None:  # type: ignore[no-untyped-def]
    from packsight.models.db import session_scope
    from packsight.models.jobs import job_counts
    from packsight.models.tables import FINAL_JOB_STATES, Job

    while True:
        with session_scope(settings.resolved_database_url) as session:
            job = session.get(Job, job_id)
            counts = job_counts(session, job=job)
            state = job.state
        items = " ".join(f"{k}={v}" for k, v in counts.items.items() if v)
        clips = counts.clips
        click.echo(
            f"  {state}: items {items}; clips {clips['labelled']}/{clips['total']}", err=True
        )
        if state in FINAL_JOB_STATES:
            return
        time.sleep(2)


def _print_summary(settings, job_id: str, elapsed: float) -> str:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from packsight.models.db import session_scope
    from packsight.models.jobs import item_outcomes, job_counts
    from packsight.models.tables import Job, JobItem, PredictionStatus

    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        counts = job_counts(session, job=job)
        click.echo(f"\n{'video':<44} {'state':<10} {'clips':>5} {'labelled':>8}  error")
        for item in session.scalars(select(JobItem).where(JobItem.job_id == job_id)):
            outcomes = item_outcomes(session, item=item, model_version_id=job.model_version_id)
            labelled = outcomes.get(PredictionStatus.OK, 0)
            error = (item.error or "")[:100]
            clips = item.clip_count if item.clip_count is not None else "-"
            click.echo(f"{item.key[-44:]:<44} {item.state:<10} {clips:>5} {labelled:>8}  {error}")
        c = counts.clips
        click.echo(
            f"\njob {job.id} {job.state}: {counts.items_total} videos, {c['total']} clips, "
            f"{c['labelled']} labelled, {c['failed']} failed, {elapsed:.1f}s"
        )
        if job.error:
            click.echo(f"job error: {job.error}")
        return job.state


@main.command()
@click.option("--job", "job_id", help="Job id (default: the latest job).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl")
def results(job_id: str | None, fmt: str) -> None:
    """Print a job's per-clip predictions."""
    from sqlalchemy import select

    from packsight.models.db import session_scope
    from packsight.models.tables import Job, ModelVersion
    from packsight.pipeline.results import job_results

    settings = _settings()
    with session_scope(settings.resolved_database_url) as session:
        if job_id is None:
            job = session.scalars(select(Job).order_by(Job.created_at.desc()).limit(1)).first()
        else:
            job = session.get(Job, job_id)
        if job is None:
            raise click.ClickException("no such job" if job_id else "no jobs yet")
        records, _ = job_results(session, job)
        taxonomy = session.get(ModelVersion, job.model_version_id).taxonomy
    click.echo(f"job {job.id}: operations of the {taxonomy} taxonomy", err=True)
    failed = [r for r in records if r["error"] is not None]
    for record in records:
        if record["error"] is not None:
            click.echo(f"{record['clip_id']} ({record['video_key']}): {record['error']}", err=True)
        elif fmt == "jsonl":
            click.echo(json.dumps(record))
        else:
            seg = record["temporal_segment"]
            click.echo(
                f"{record['clip_id']:<28} {record['dominant_operation']:<22} "
                f"{seg['start_frame']:>4}-{seg['end_frame']:<4} "
                f"{record['anticipated_next_operation']:<22} {record['confidence']:.3f}  "
                f"{record['video_key']} {record['start_s']:.1f}-{record['end_s']:.1f}s"
            )
    if failed:
        click.echo(f"{len(failed)} clips have no label (errors above)", err=True)


@main.command()
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
def train(bucket: str | None, config_json: str, wait: bool, results_path: Path | None) -> None:
    """Fine-tune an adapter on the verified labels, evaluate it and promote it if it wins."""
    from packsight.faults import TransientError
    from packsight.models.migrate import upgrade_database
    from packsight.models.training_runs import ActiveRunError
    from packsight.pipeline.dispatch import BrokerUnavailableError
    from packsight.pipeline.training_runs import start_training

    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--config") from exc
    if not isinstance(config, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--config")
    settings = _settings()
    if settings.embedded:
        upgrade_database(settings.resolved_database_url)
        click.echo("embedded mode: training in this process")
    ctx = _context(settings)
    try:
        run_id = start_training(ctx, trigger="manual", config=config, bucket=bucket)
    except (ActiveRunError, BrokerUnavailableError, ValueError, TransientError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"training run {run_id}: {settings.model}, {settings.taxonomy} taxonomy")
    if ctx.embedded:
        _drive(ctx, training_run_id=run_id)
    run = _follow_run(settings, run_id, wait=wait)
    if run.results is not None and results_path is not None:
        results_path.write_text(json.dumps(run.results, indent=2) + "\n")
        click.echo(f"wrote {results_path}")
    if run.state == "failed":
        sys.exit(1)


def _follow_run(settings, run_id: str, *, wait: bool):  # type: ignore[no-untyped-def]
    from packsight.models.db import session_scope
    from packsight.models.tables import FINAL_RUN_STATES, TrainingRun, TrainingRunState

    last = None
    while True:
        with session_scope(settings.resolved_database_url) as session:
            run = session.get(TrainingRun, run_id)
        progress = f"{run.state} step {run.step}/{run.total_steps or '?'}"
        if progress != last:
            click.echo(f"  {progress}", err=True)
            last = progress
        if run.state in FINAL_RUN_STATES or not wait:
            break
        time.sleep(5)
    if run.state == TrainingRunState.FAILED:
        click.echo(f"failed: {run.error}", err=True)
    elif run.state == TrainingRunState.SUCCEEDED:
        results = run.results or {}
        blocks = [(name, results.get(name)) for name in ("base_model", "finetuned_model")]
        blocks += [(f"baseline {n}", b) for n, b in (results.get("baselines") or {}).items()]
        blocks.append(("champion_model", results.get("champion_model")))
        for block, scores in blocks:
            if scores:
                metrics = "  ".join(
                    f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float)
                )
                click.echo(f"{block:<18} {metrics}  ({scores['clips']} clips)  {scores['model']}")
        click.echo(f"{run.decision}: {run.decision_reason}")
        click.echo(f"artifacts: {run.artifacts_uri}")
    return run


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = _settings()
    if settings.api_token is None:
        raise click.UsageError("set PACKSIGHT_API_TOKEN to a secret before serving the API")
    uvicorn.run("packsight.api.app:app", host=host, port=port, log_level="info")


@main.command()
@click.option("--queue", "queues", multiple=True, required=True, help="Queue(s) to consume.")
@click.option("--concurrency", type=int, default=None)
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default=None)
def worker(queues: tuple[str, ...], concurrency: int | None, pool: str | None) -> None:
    """Run a Celery worker. GPU queues default to --pool solo (CUDA is not fork-safe)."""
    settings = _settings()  # before the Celery app, which reads the settings on import
    if settings.embedded:
        raise click.UsageError("set PACKSIGHT_BROKER_URL: a worker needs a broker")
    from packsight.workers.app import app

    gpu = any(q.startswith("gpu") for q in queues)
    pool = pool or ("solo" if gpu else "prefork")
    argv = ["worker", "-Q", ",".join(queues), "--pool", pool, "--loglevel", "INFO", "-E"]
    if concurrency and pool != "solo":
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv)


@main.command()
def beat() -> None:
    """Run the scheduler: the sweeper (republishes lost work, takes back work of dead
    workers) and the nightly training run. Run exactly one per deployment."""
    from packsight.workers.app import app

    settings = _settings()
    if settings.embedded:
        raise click.UsageError("set PACKSIGHT_BROKER_URL: the scheduler needs a broker")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    app.start(["beat", "--loglevel", "INFO", "--schedule", str(schedule)])


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Run Flower (the queue monitor) behind PACKSIGHT_FLOWER_BASIC_AUTH. Other arguments
    (--port=5555, --address=...) go to `celery flower` as they are."""
    settings = _settings()  # before the Celery app, which reads the settings on import
    if settings.flower_basic_auth is None:
        raise click.UsageError("set PACKSIGHT_FLOWER_BASIC_AUTH=user:password: Flower needs auth")
    if settings.embedded:
        raise click.UsageError("set PACKSIGHT_BROKER_URL: Flower watches a broker's queues")
    if any(arg.startswith(("--basic-auth", "--basic_auth")) for arg in flower_args):
        raise click.UsageError("Flower's basic auth comes from PACKSIGHT_FLOWER_BASIC_AUTH only")
    # `celery -A packsight.workers.app flower --basic-auth=...`, in this process: the password
    # stays out of the process list, where a child's command line would show it.
    from packsight.workers.app import app

    auth = settings.flower_basic_auth.get_secret_value()
    sys.exit(app.start(["flower", f"--basic-auth={auth}", *flower_args]))


def _register_subgroups() -> None:
    from packsight.cli_labels import labels
    from packsight.cli_models import models

    main.add_command(labels)
    main.add_command(models)


_register_subgroups()

if __name__ == "__main__":
    sys.exit(main())
