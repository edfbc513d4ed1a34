"""The `packsight` command group: every command of the CLI, by module."""

from __future__ import annotations

import click

from packsight.cli.context import CommandContext
from packsight.cli.demo import synth, tiny_model
from packsight.cli.errors import PacksightGroup
from packsight.cli.info import info
from packsight.cli.labelling import label, results
from packsight.cli.labels import labels
from packsight.cli.prior import prior
from packsight.cli.review import review
from packsight.cli.services import api, beat, flower, migrate, worker
from packsight.cli.timelines import timeline
from packsight.cli.training import train
from packsight.cli.versions import versions


@click.group(cls=PacksightGroup)
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """packsight: label warehouse packaging video with a fine-tuned vision-language model."""
    click_ctx.obj = CommandContext()


for command in (synth, tiny_model, info, migrate, label, results, train, api, worker, beat):
    main.add_command(command)
main.add_command(flower)
main.add_command(timeline)
main.add_command(labels)
main.add_command(versions)
main.add_command(review)
main.add_command(prior)
