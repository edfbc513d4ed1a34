"""What each kind of work unit runs, and how its subject fails once its attempts are spent."""

from __future__ import annotations

from packsight.models.tables.work import UnitKind
from packsight.pipeline.context import Context
from packsight.pipeline.label_delivery import label_clips
from packsight.pipeline.labelling import give_up_labelling
from packsight.pipeline.listing import give_up_listing, list_source
from packsight.pipeline.sampling import give_up_sampling, sample_video
from packsight.pipeline.training import give_up_training, train_run
from packsight.pipeline.units import Stage, run_unit

STAGES: dict[str, Stage] = {
    UnitKind.LIST: Stage(list_source, give_up_listing),
    UnitKind.SAMPLE: Stage(sample_video, give_up_sampling),
    UnitKind.LABEL: Stage(label_clips, give_up_labelling),
    UnitKind.TRAIN: Stage(train_run, give_up_training),
}


def run(ctx: Context, unit_id: int) -> None:
    """Deliver one unit of any kind."""
    run_unit(ctx, unit_id, STAGES)
