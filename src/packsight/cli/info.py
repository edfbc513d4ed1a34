"""`packsight info`: where this machine's packsight keeps its state and what it talks to."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from packsight.cli.context import CommandContext, pass_command_context


@click.command()
@click.option("--data-dir", "data_dir_only", is_flag=True, help="Print the data folder only.")
@pass_command_context
def info(cmd: CommandContext, data_dir_only: bool) -> None:
    """Show the data folder, database, storage, broker and model these settings use."""
    settings = cmd.settings
    data_dir = settings.data_dir.expanduser().resolve()
    if data_dir_only:
        click.echo(str(data_dir))
        return
    storage = (
        f"S3 at {settings.s3_endpoint_url or 'the AWS default endpoint'}"
        if settings.storage == "s3"
        else f"local folder {settings.resolved_local_root}"
    )
    broker = (
        _without_password(settings.broker_url)
        if settings.broker_url
        else "none: the embedded default, tasks run in the command's process"
    )
    model = settings.model + (f" + adapter {settings.adapter}" if settings.adapter else "")
    for name, value in (
        ("data dir", data_dir),
        ("database", cmd.shown_database),
        ("storage", storage),
        ("broker", broker),
        ("base model", model),
        ("taxonomy", settings.taxonomy),
    ):
        click.echo(f"{name + ':':<11} {value}")


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse (several hosts, ...): its scheme only
        return url.partition("://")[0] + "://..."
