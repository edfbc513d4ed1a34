"""The retraining steps without services: the dataset from labelled videos (splits, the fixed
test clips, unreadable videos skipped by name), the promotion decision, and artifact folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest

from packsight.labels.metrics import (
    ClipShape,
    ClipTruth,
    Evaluation,
    chance_predictions,
    constant_predictions,
    evaluate,
    majority_predictions,
)
from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.storage.artifacts import (
    artifact_uri,
    parse_artifact_uri,
    resolve_artifact,
    upload_folder,
)
from packsight.storage.base import InvalidKeyError, ObjectNotFoundError
from packsight.storage.local import LocalStorage
from packsight.training.judging import decide
from packsight.training.retraining import (
    LabelledVideo,
    Splits,
    VideoUnavailableError,
    build_dataset,
)
from packsight.video.sampling import FrameSettings
from packsight.video.synth import SyntheticVideo, write_synthetic_archive

TAXONOMY = load_taxonomy("assignment")
SPLITS = Splits(train=("U0101", "U0102"), validation=("U0103",), test=("U0108",), test_clips=2)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticVideo]]:
    root = tmp_path_factory.mktemp("archive")
    # Videos 0, 1, 2 and 7 are subjects U0101, U0102, U0103 and U0108.
    videos = write_synthetic_archive(root, videos=8, seed=7, min_seconds=12, max_seconds=16)
    return root, videos


def labelled(videos: list[SyntheticVideo]) -> list[LabelledVideo]:
    return [LabelledVideo("archive", v.key, v.user, v.segments) for v in videos]


def test_dataset_follows_the_subject_splits_and_keeps_the_first_test_clips(
    archive: tuple[Path, list[SyntheticVideo]],
) -> None:
    root, videos = archive
    seen: list[str] = []
    broken = LabelledVideo("archive", "U0101/video/broken.mp4", "U0101", [("Tape", 0, 300)])
    (root / broken.key).write_bytes(b"\x00not a video" * 100)
    deleted = LabelledVideo("archive", "U0102/video/deleted.mp4", "U0102", [("Tape", 0, 300)])

    def fetch(video: LabelledVideo) -> Path:
        if video is deleted:
            raise VideoUnavailableError("object not found")
        return root / video.key

    dataset = build_dataset(
        [*labelled(videos), broken, deleted],
        fetch,
        taxonomy=TAXONOMY,
        splits=SPLITS,
        frames=FrameSettings(max_side=56),
        on_video=lambda v: seen.append(v.subject),
    )
    # Subjects outside every split (U0104..U0107) are not even fetched.
    assert sorted(set(seen)) == ["U0101", "U0102", "U0103", "U0108"]
    assert {e.subject for e in dataset.train} == {"U0101", "U0102"}
    assert {e.subject for e in dataset.validation} == {"U0103"}
    ids = [e.clip_id for e in dataset.test]
    assert len(ids) == 2 and ids == sorted(ids) and all(i.startswith("U0108_") for i in ids)
    # The unreadable file is named with the reason, and the rest of the data is still there.
    assert [video for video, _ in dataset.skipped] == [
        "archive/U0101/video/broken.mp4",
        "archive/U0102/video/deleted.mp4",
    ]
    assert "object not found" in dataset.skipped[1][1]
    summary = dataset.summary()
    assert summary["test_clip_ids"] == ids and summary["train_clips"] == len(dataset.train)
    # A procedure step always has a next step (at a session's end, the procedure's), never
    # "Unknown", since the taxonomy defines a procedure.
    steps = [e for e in dataset.train if e.truth.dominant_operation in TAXONOMY.procedure]
    assert steps and all(e.truth.next_operation != TAXONOMY.unknown for e in steps)


def evaluation(oca: float, tiou: float, aa: float, count: int = 30) -> Evaluation:
    return Evaluation(oca=oca, tiou_at_05=tiou, aa_at_1=aa, count=count, missing=0, confusion={})


class Rule(TypedDict):  # decide()'s promotion rule
    primary: str
    tolerance: float
    margin: float


RULE: Rule = {"primary": "AA@1", "tolerance": 0.02, "margin": 0.05}


def test_decision_compares_with_the_champion_or_else_the_base() -> None:
    base = evaluation(0.2, 0.1, 0.1)
    candidate = evaluation(0.5, 0.5, 0.4)
    champion = evaluation(0.6, 0.6, 0.5)
    trivial = {"majority": evaluation(0.2, 0.9, 0.2), "chance": evaluation(0.1, 0.2, 0.1)}
    against_base = decide(candidate, None, base, baselines=trivial, **RULE)
    assert against_base.promote and "base model" in against_base.reason
    against_champion = decide(candidate, champion, base, baselines=trivial, **RULE)
    assert not against_champion.promote and "champion" in against_champion.reason
    # Better on the primary metric but a collapse elsewhere: refused.
    lopsided = evaluation(0.0, 0.5, 0.6)
    assert not decide(lopsided, champion, base, baselines=trivial, **RULE).promote


def test_a_collapsed_adapter_is_refused_by_the_baselines() -> None:
    """One class for every clip: far better than a base model that answers at random, no better
    than always answering the training labels' most common operation."""
    taxonomy = TAXONOMY
    truths = [
        ClipTruth(f"c{i}", op, 0, 124, nxt)
        for i, (op, nxt) in enumerate(
            [("Tape", "Label")] * 12 + [("Pack", "Tape")] * 9 + [("Label", "Final Check")] * 9
        )
    ]
    shapes = [ClipShape(t.clip_id, 125) for t in truths]
    training = truths  # the same distribution as the training labels
    majority = evaluate(majority_predictions(training, shapes), truths, taxonomy)
    chance = evaluate(chance_predictions(shapes, taxonomy), truths, taxonomy)
    collapsed = evaluate(
        {t.clip_id: ClipPrediction("Tape", 0, 124, "Label", 0.9) for t in truths}, truths, taxonomy
    )
    base = evaluate({}, truths, taxonomy)  # no valid answer at all
    decision = decide(
        collapsed, None, base, baselines={"majority": majority, "chance": chance}, **RULE
    )
    assert collapsed.oca == majority.oca == 0.4  # the collapse is the majority answer
    assert not decision.promote
    assert "majority baseline" in decision.reason and "OCA" in decision.reason

    # Collapsed onto the test clips' own most common class, which the training labels did not
    # favour: it beats the training majority, never the best constant answer on these clips.
    other_training = [ClipTruth("t", "Label", 0, 124, "Final Check")] * 5
    majority = evaluate(majority_predictions(other_training, shapes), truths, taxonomy)
    constant = evaluate(constant_predictions(truths, shapes), truths, taxonomy)
    baselines = {"majority": majority, "constant": constant, "chance": chance}
    assert collapsed.oca >= majority.oca + 0.05 and collapsed.aa_at_1 >= majority.aa_at_1 + 0.05
    decision = decide(collapsed, None, base, baselines=baselines, **RULE)
    assert not decision.promote and "constant baseline" in decision.reason


def test_artifact_uris_round_trip_and_reject_bad_ones() -> None:
    uri = artifact_uri("packsight-artifacts", "training-runs/abc/adapter/")
    assert uri == "artifact://packsight-artifacts/training-runs/abc/adapter"
    assert parse_artifact_uri(uri) == ("packsight-artifacts", "training-runs/abc/adapter")
    assert parse_artifact_uri("/models/adapter") is None
    assert parse_artifact_uri("Qwen/Qwen2-VL-2B-Instruct") is None
    with pytest.raises(InvalidKeyError):
        parse_artifact_uri("artifact://bucket-only")


def test_resolve_artifact_downloads_a_folder_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    storage.ensure_bucket("art")
    source = tmp_path / "adapter"
    (source / "nested").mkdir(parents=True)
    (source / "adapter_config.json").write_text("{}")
    (source / "nested" / "weights.bin").write_bytes(b"\x01\x02")
    assert sorted(upload_folder(storage, source, "art", "runs/1/adapter")) == [
        "runs/1/adapter/adapter_config.json",
        "runs/1/adapter/nested/weights.bin",
    ]
    uri = artifact_uri("art", "runs/1/adapter")
    local = Path(resolve_artifact(uri, storage, tmp_path / "cache"))
    assert (local / "nested" / "weights.bin").read_bytes() == b"\x01\x02"
    # Cached: a second resolve does not download again (the objects could even be gone).
    storage.put_bytes("art", "runs/1/adapter/adapter_config.json", b'{"changed": true}')
    assert resolve_artifact(uri, storage, tmp_path / "cache") == str(local)
    assert (local / "adapter_config.json").read_text() == "{}"
    # Paths and hub ids pass through untouched; a missing artifact is a clear error.
    assert resolve_artifact("/models/a", storage, tmp_path / "cache") == "/models/a"
    with pytest.raises(ObjectNotFoundError, match="runs/2/adapter"):
        resolve_artifact(artifact_uri("art", "runs/2/adapter"), storage, tmp_path / "cache")


def test_run_params_survive_the_database_round_trip() -> None:
    import json

    from packsight.training.retraining import RunParams

    params = RunParams(config={"lr": 2e-4, "train_modules": ["lm_head"]}, splits=SPLITS, bucket="b")
    stored = json.loads(json.dumps(params.to_json()))  # as the JSON column keeps it
    assert RunParams.from_json(stored) == params


def test_run_settings_are_validated_when_the_run_is_queued() -> None:
    import subprocess
    import sys

    from packsight.pipeline.training_runs import training_params
    from packsight.settings import Settings

    settings = Settings(training_config={"lr": 2e-4}, test_clips=12, training_bucket="archive")
    params = training_params(settings, config={"max_steps": 50, "train_modules": ["lm_head"]})
    assert params.config["lr"] == 2e-4 and params.config["max_steps"] == 50
    assert params.config["train_modules"] == ["lm_head"]  # as the JSON column keeps it
    assert params.splits.test == ("U0108",) and params.splits.test_clips == 12
    assert params.bucket == "archive" and params.promotion_metric == "AA@1"
    for bad, why in (
        ({"learning_rate": 1}, "unknown training setting"),
        ({"lr": "fast"}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"quantization": "none"}, "PACKSIGHT_QUANTIZATION"),
    ):
        with pytest.raises(ValueError, match=why):
            training_params(settings, config=bad)
    # The API and the beat task validate without loading the ML stack.
    probe = "from packsight.pipeline.training_runs import training_params; import sys; " + (
        "from packsight.settings import Settings; training_params(Settings()); "
        "assert 'torch' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_run_artifacts_restore_the_furthest_checkpoint_and_frozen_videos(tmp_path: Path) -> None:
    import json

    from packsight.training.artifacts import RunArtifacts

    storage = LocalStorage(tmp_path / "objects")
    storage.ensure_bucket("art")
    artifacts = RunArtifacts(storage, "art", "run-1")

    def checkpoint(folder: Path, step: int) -> Path:
        (folder / "adapter").mkdir(parents=True, exist_ok=True)
        (folder / "adapter" / "weights.bin").write_bytes(bytes([step % 256]))
        (folder / "state.json").write_text(json.dumps({"step": step}))
        return folder

    assert artifacts.restore_checkpoint(tmp_path / "empty" / "checkpoint") is None  # none stored
    artifacts.save_checkpoint(checkpoint(tmp_path / "machine-b", 100), 100)
    # A machine that stopped at step 50 takes the stored step 100 ...
    behind = checkpoint(tmp_path / "machine-a" / "checkpoint", 50)
    assert artifacts.restore_checkpoint(behind) == 100
    assert json.loads((behind / "state.json").read_text())["step"] == 100
    assert (behind / "adapter" / "weights.bin").read_bytes() == bytes([100])
    # ... one that got further keeps its own.
    ahead = checkpoint(tmp_path / "machine-c" / "checkpoint", 150)
    assert artifacts.restore_checkpoint(ahead) is None
    assert json.loads((ahead / "state.json").read_text())["step"] == 150

    assert artifacts.get_videos() is None
    videos = [LabelledVideo("b", "U0101/a.mp4", "U0101", [("Tape", 0, 100), ("Pack", 100, 250)])]
    artifacts.put_videos(videos)
    assert artifacts.get_videos() == videos


def test_evaluation_clips_are_what_labelling_makes_whatever_the_labels(
    archive: tuple[Path, list[SyntheticVideo]],
) -> None:
    """Test and validation clips: the fixed windows and frames of `packsight label`; the labels
    decide each clip's truth and nothing else (no boundary steers the sampling)."""
    import numpy as np

    from packsight.training.examples import production_examples
    from packsight.video.decode import plan_clips

    root, videos = archive
    video = videos[7]  # subject U0108
    path, frames = root / video.key, FrameSettings(max_side=56)
    common: dict[str, Any] = {
        "prefix": "U0108_S0107",
        "subject": "U0108",
        "taxonomy": TAXONOMY,
        "frames": frames,
    }
    labelled = production_examples(path, video.segments, **common)
    relabelled = production_examples(path, [("Tape", 0, video.frame_count)], **common)
    _, plans = plan_clips(path)  # as the sampling stage calls it, with the same settings
    assert [p.frame_indices for p in plans] == [e.frame_indices for e in labelled]
    assert [e.frame_indices for e in relabelled] == [e.frame_indices for e in labelled]
    assert all(
        np.array_equal(a.frames, b.frames) for a, b in zip(labelled, relabelled, strict=True)
    )
    assert {e.truth.dominant_operation for e in relabelled} == {"Tape"}
    assert {e.truth.dominant_operation for e in labelled} != {"Tape"}
    assert [e.clip_id for e in labelled][:2] == ["U0108_S0107_t0000", "U0108_S0107_t0005"]
