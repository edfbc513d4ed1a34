"""`packsight migrate|api|worker|beat|flower`: the deployment's processes."""

from __future__ import annotations

import sys

import click

from packsight.cli.context import CommandContext, pass_command_context


@click.command()
@pass_command_context
def migrate(cmd: CommandContext) -> None:
    """Create or upgrade the database schema."""
    from packsight.models.migrate import upgrade_database

    upgrade_database(cmd.database_url)
    click.echo(f"database at head: {cmd.shown_database}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@pass_command_context
def api(cmd: CommandContext, host: str, port: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    if cmd.settings.api_token is None:
        raise click.UsageError("set PACKSIGHT_API_TOKEN to a secret before serving the API")
    uvicorn.run("packsight.api.app:app", host=host, port=port, log_level="info")


def _needs_broker(cmd: CommandContext, what: str) -> None:
    if cmd.settings.embedded:
        raise click.UsageError(f"set PACKSIGHT_BROKER_URL: {what}")


@click.command()
@click.option("--queue", "queues", multiple=True, required=True, help="Queue(s) to consume.")
@click.option("--concurrency", type=int, default=None)
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default=None)
@pass_command_context
def worker(
    cmd: CommandContext, queues: tuple[str, ...], concurrency: int | None, pool: str | None
) -> None:
    """Run a Celery worker. GPU queues default to --pool solo (CUDA is not fork-safe)."""
    _needs_broker(cmd, "a worker needs a broker")  # checked before the Celery app reads them
    from packsight.workers.app import app

    gpu = any(q.startswith("gpu") for q in queues)
    pool = pool or ("solo" if gpu else "prefork")
    argv = ["worker", "-Q", ",".join(queues), "--pool", pool, "--loglevel", "INFO", "-E"]
    if concurrency and pool != "solo":
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv)


@click.command()
@pass_command_context
def beat(cmd: CommandContext) -> None:
    """Run the scheduler: the sweeper (republishes lost work, takes back work of dead
    workers) and the nightly training run. Run exactly one per deployment."""
    _needs_broker(cmd, "the scheduler needs a broker")
    from packsight.workers.app import app

    cmd.settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = cmd.settings.data_dir.resolve() / "celerybeat-schedule"
    app.start(["beat", "--loglevel", "INFO", "--schedule", str(schedule)])


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@pass_command_context
def flower(cmd: CommandContext, flower_args: tuple[str, ...]) -> None:
    """Run Flower (the queue monitor) behind PACKSIGHT_FLOWER_BASIC_AUTH. Other arguments
    (--port=5555, --address=...) go to `celery flower` as they are."""
    auth = cmd.settings.flower_basic_auth
    if auth is None:
        raise click.UsageError("set PACKSIGHT_FLOWER_BASIC_AUTH=user:password: Flower needs auth")
    _needs_broker(cmd, "Flower watches a broker's queues")
    if any(arg.startswith(("--basic-auth", "--basic_auth")) for arg in flower_args):
        raise click.UsageError("Flower's basic auth comes from PACKSIGHT_FLOWER_BASIC_AUTH only")
    # `celery -A packsight.workers.app flower --basic-auth=...`, in this process: the password
    # stays out of the process list, where a child's command line would show it.
    from packsight.workers.app import app

    sys.exit(app.start(["flower", f"--basic-auth={auth.get_secret_value()}", *flower_args]))
