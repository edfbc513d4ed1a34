"""What every command shares: the settings (read once, errors as one line), the application
layer's context, and the database made ready on the embedded default."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from packsight.pipeline.context import Context
from packsight.settings import Settings
from packsight.storage.base import InvalidKeyError
from packsight.storage.keys import validate_bucket, validate_prefix
from packsight.storage.local import link_local_bucket


@dataclass
class CommandContext:
    # Settings a command implies (an s3:// source means S3 storage), applied over the env.
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        try:
            return Settings(**self.overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"PACKSIGHT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise click.UsageError(f"invalid settings: {problems}") from exc

    @cached_property
    def app(self) -> Context:
        """On the embedded default this process runs the work (and waits out outages like a
        worker); with a broker it only submits and follows."""
        from packsight.workers.broker import publisher_for

        return Context(self.settings, publisher_for(self.settings), patient=self.settings.embedded)

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url

    @property
    def shown_database(self) -> str:
        return make_url(self.database_url).render_as_string(hide_password=True)

    def ready_database(self) -> None:
        """The embedded default's SQLite file is created or upgraded on first use; a served
        database is the deployment's to migrate (`packsight migrate`)."""
        if self.settings.embedded:
            from packsight.models.migrate import upgrade_database

            upgrade_database(self.database_url)

    def source(self, source: str) -> tuple[str, str]:
        """(bucket, prefix) of s3://bucket/prefix, or of a local folder, which becomes the
        bucket of its name."""
        if source.startswith("s3://"):
            bucket, _, prefix = source.removeprefix("s3://").partition("/")
            if not bucket:
                raise click.BadParameter("s3:// source needs a bucket name", param_hint="SOURCE")
            try:
                validate_bucket(bucket)
                validate_prefix(prefix)
            except InvalidKeyError as exc:
                raise click.BadParameter(str(exc), param_hint="SOURCE") from exc
            self._use_s3()
            return bucket, prefix
        folder = Path(source).expanduser().resolve()
        if not folder.is_dir():
            raise click.BadParameter(
                f"{source!r} is not a folder or s3:// URL", param_hint="SOURCE"
            )
        if self.settings.storage != "local":
            raise click.UsageError("a local folder needs PACKSIGHT_STORAGE=local")
        return self.local_bucket(folder), ""

    def _use_s3(self) -> None:
        """An s3:// source is read from S3, whatever the storage setting says."""
        if self.settings.storage != "s3":
            self.overrides["storage"] = "s3"
            del self.__dict__["settings"]  # read again with the override

    def local_bucket(self, folder: Path, hint: str = "SOURCE") -> str:
        """The bucket a local folder is under the local storage (linked there by name once)."""
        try:
            return link_local_bucket(self.settings.resolved_local_root, folder)
        except InvalidKeyError as exc:
            raise click.BadParameter(
                f"{str(folder)!r} cannot be a bucket: {exc}", param_hint=hint
            ) from exc


pass_command_context = click.make_pass_decorator(CommandContext, ensure=True)
