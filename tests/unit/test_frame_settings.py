"""A model version is served with the frames it was trained on: a job takes them unless other
frame settings are asked for explicitly, which is an error unless forced."""

from __future__ import annotations

from dataclasses import replace

import pytest

from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.submission import FrameSettingsMismatchError, job_frames
from packsight.settings import Settings
from packsight.video.sampling import SAMPLER, SAMPLERS, FrameSettings

TRAINED = FrameSettings(max_side=112)


def version(trained: FrameSettings | None) -> ModelVersion:
    settings = {"frames": trained.to_json()} if trained is not None else None
    return ModelVersion(name="tiny@run-1:nf4:openpack", settings=settings)


def test_a_job_labels_with_the_frames_the_adapter_was_trained_on() -> None:
    assert job_frames(Settings(), version(TRAINED)) == TRAINED
    # A base model was trained on nothing of ours: the configured frames.
    assert job_frames(Settings(frame_max_side=224), version(None)).max_side == 224
    # Asking explicitly for what it was trained on is fine, whatever the other defaults are.
    assert job_frames(Settings(frame_max_side=112), version(TRAINED)) == TRAINED
    assert job_frames(Settings(sampler=TRAINED.sampler), version(TRAINED)) == TRAINED
    older = FrameSettings(max_side=112, motion_size=(80, 60), sampler=SAMPLERS[0])
    assert job_frames(Settings(motion_width=80, frames_per_clip=8), version(older)) == older


def test_other_frames_asked_for_explicitly_are_refused_unless_forced() -> None:
    with pytest.raises(FrameSettingsMismatchError, match="PACKSIGHT_FRAME_MAX_SIDE") as refused:
        job_frames(Settings(frame_max_side=336), version(TRAINED))
    assert "112px" in str(refused.value) and "PACKSIGHT_FORCE_FRAME_SETTINGS" in str(refused.value)
    with pytest.raises(FrameSettingsMismatchError, match=r"PACKSIGHT_SAMPLER asks") as refused:
        other = next(name for name in SAMPLERS if name != TRAINED.sampler)
        job_frames(Settings(sampler=other, frame_max_side=112), version(TRAINED))
    assert "PACKSIGHT_FRAME_MAX_SIDE" not in str(refused.value)  # that one matches
    forced = Settings(frame_max_side=336, force_frame_settings=True)
    assert job_frames(forced, version(TRAINED)).max_side == 336


def test_frame_settings_name_themselves_and_survive_json() -> None:
    assert TRAINED.key == f"{SAMPLER}/8f/5s/112px/160x120"
    assert FrameSettings.from_json(TRAINED.to_json()) == TRAINED
    assert FrameSettings(clip_seconds=2.5).key != FrameSettings().key


def test_a_champion_trained_on_other_frames_is_not_compared() -> None:
    from packsight.labels.taxonomy import load_taxonomy
    from packsight.pipeline.evaluation import RunVersions, incomparable
    from packsight.pipeline.training_steps import RunSpec
    from packsight.training.retraining import RunParams, Splits

    params = RunParams(config={}, splits=Splits(("U0101",), ("U0107",), ("U0108",)), max_side=112)
    run = RunSpec("run", "claim", params, "tiny", "nf4", load_taxonomy("openpack"))
    base, candidate = version(None), version(TRAINED)
    same = RunVersions(base, candidate, champion=version(TRAINED))
    assert incomparable(run, same) is None
    assert incomparable(run, RunVersions(base, candidate, champion=None)) is None
    other = RunVersions(base, candidate, champion=version(FrameSettings(max_side=336)))
    refusal = incomparable(run, other)
    assert refusal is not None and not refusal.promote and "336px" in refusal.reason


def test_what_was_recorded_before_the_sampler_was_kept_reads_as_the_first_sampler() -> None:
    from packsight.pipeline.sampling import frames_of_job
    from packsight.training.retraining import RunParams, Splits

    legacy_job = {"frames_per_clip": 8, "clip_seconds": 5.0, "frame_max_side": 336}
    assert frames_of_job(legacy_job).sampler == SAMPLERS[0]
    params = RunParams(config={}, splits=Splits(("U0101",), ("U0107",), ("U0108",)))
    assert params.sampler == SAMPLER
    params = replace(params, sampler=SAMPLERS[-1])
    recorded = {k: v for k, v in params.to_json().items() if k != "sampler"}
    assert RunParams.from_json(recorded).frames.sampler == SAMPLERS[0]
    assert RunParams.from_json(params.to_json()) == params


def test_an_unknown_sampler_is_refused_by_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown sampler 'motion-magic'; known: motion-"):
        Settings(sampler="motion-magic")
