"""Fine-tuning against a real tiny Qwen2-VL (NF4 on the CPU) and a synthetic archive: examples,
supervised tokens, loss, crash-resume and a better score than the base model."""

import re
from pathlib import Path

import pytest
import torch
from labeler_clips import predicted
from peft.utils import load_peft_weights

from packsight.labels.metrics import Evaluation, evaluate
from packsight.labels.taxonomy import load_taxonomy
from packsight.training.batches import IGNORE, answer_for, clip_input, training_batch
from packsight.training.config import TrainingConfig
from packsight.training.examples import TrainingExample, examples_for_video
from packsight.training.qlora import TrainingResult, train_adapter
from packsight.training.windows import select_training_windows, split_for_subject
from packsight.video.sampling import FrameSettings
from packsight.video.synth import SyntheticVideo, write_synthetic_archive
from packsight.vlm.answer import HEAD, AnswerFormat
from packsight.vlm.labeler import load_labeler
from packsight.vlm.tiny import build_tiny_model

TAXONOMY = load_taxonomy("assignment")
MAX_SIDE = 112  # 320x240 videos -> 112x84 frames: 48 video tokens a clip keeps steps fast
# ~8 s on 2 cores: enough to learn the segment prior (tIoU@0.5). Learning the operations from the
# video takes TINY_RECIPE (the learnable tiny model, more data and steps, a trained lm_head):
# tests/e2e/test_cli_embedded.py trains it with `packsight train` and checks all three metrics.
TUNED = TrainingConfig(lr=3e-3, max_steps=60, checkpoint_every=20)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2_vl"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[SyntheticVideo]:
    # 9 videos: subjects U0101..U0108 then U0101 again, so U0108 (the test subject) is included.
    root = tmp_path_factory.mktemp("archive")
    return write_synthetic_archive(root, videos=9, seed=42, min_seconds=24, max_seconds=40)


@pytest.fixture(scope="module")
def examples(videos: list[SyntheticVideo]) -> dict[str, list[TrainingExample]]:
    return {
        v.key: examples_for_video(
            v.path,
            v.segments,
            prefix=f"{v.user}_{v.session}",
            subject=v.user,
            taxonomy=TAXONOMY,
            frames=FrameSettings(max_side=MAX_SIDE),
        )
        for v in videos
    }


def split(examples: dict[str, list[TrainingExample]], name: str) -> list[TrainingExample]:
    return [e for clips in examples.values() for e in clips if split_for_subject(e.subject) == name]


def score(model: str, adapter: str | None, clips: list[TrainingExample]) -> Evaluation:
    """The labeler's constrained answers for `clips`, scored against their truths."""
    labeler = load_labeler(model=model, adapter=adapter, quantization="nf4", taxonomy=TAXONOMY)
    predictions = labeler.predict([clip_input(e) for e in clips])
    return evaluate(
        {e.clip_id: predicted(p) for e, p in zip(clips, predictions, strict=True)},
        [e.truth for e in clips],
        TAXONOMY,
    )


@pytest.fixture(scope="module")
def trained(
    tiny_model: str, examples: dict[str, list[TrainingExample]], tmp_path_factory
) -> TrainingResult:
    out = tmp_path_factory.mktemp("trained")
    return train_adapter(
        model=tiny_model,
        train=split(examples, "train"),
        out_dir=out,
        config=TUNED,
        taxonomy=TAXONOMY,
    )


def test_examples_cover_boundaries_with_valid_frames_and_truths(
    videos: list[SyntheticVideo], examples: dict[str, list[TrainingExample]]
) -> None:
    all_ids = [e.clip_id for clips in examples.values() for e in clips]
    assert len(all_ids) == len(set(all_ids))
    assert split(examples, "test") and split(examples, "train")
    for video in videos:
        clips = examples[video.key]
        windows = select_training_windows(video.segments, frame_count=video.frame_count, fps=25)
        assert len(clips) == len(windows)
        boundary_clips = [(c, w) for c, w in zip(clips, windows, strict=True) if w.boundary]
        assert boundary_clips, video.key
        for clip, window in boundary_clips:
            # The sampler always shows the boundary frame itself.
            assert window.boundary in clip.frame_indices
        for clip in clips:
            assert clip.clip_id.startswith(Path(video.key).stem + "_t")
            assert clip.subject == video.user
            assert clip.frames.dtype.name == "uint8" and clip.frames.shape == (8, 84, 112, 3)
            assert clip.clip_frame_count == 125 and len(clip.frame_indices) == 8
            assert list(clip.frame_indices) == sorted(clip.frame_indices)
            truth = clip.truth
            assert truth.clip_id == clip.clip_id
            assert truth.dominant_operation in TAXONOMY.operations
            assert truth.next_operation in TAXONOMY.operations
            assert 0 <= truth.start_frame <= truth.end_frame < clip.clip_frame_count


def test_supervised_tokens_spell_the_labelers_answer(
    tiny_model: str, examples: dict[str, list[TrainingExample]]
) -> None:
    labeler = load_labeler(model=tiny_model, adapter=None, quantization="nf4", taxonomy=TAXONOMY)
    chosen = split(examples, "train")[:3]
    batch = training_batch(labeler, chosen)
    tokenizer = labeler.processor.tokenizer
    answer_format = AnswerFormat(tokenizer, TAXONOMY)
    length = len(answer_format.answer_token_ids(answer_for(chosen[0], TAXONOMY))) + 1  # + im_end
    for row, example in enumerate(chosen):
        ids = batch.inputs["input_ids"][row]
        labels = batch.labels[row]
        start = len(ids) - length
        decided = [start + i for i in answer_format.decision_positions()]
        # Exactly the decided tokens carry labels, and they are the input's own tokens.
        assert (labels != IGNORE).nonzero().flatten().tolist() == decided
        assert labels[decided].tolist() == ids[decided].tolist()
        assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n" + HEAD)
        text = tokenizer.decode(ids[start:-1])
        rendered = answer_format.render(answer_for(example, TAXONOMY))
        # The model writes three-digit frame numbers; render() gives them unpadded.
        assert HEAD + re.sub(r"\b0+(\d)", r"\1", text) == rendered
        assert text.count(f"{example.truth.start_frame:03d}") >= 1


def test_training_lowers_the_loss(trained: TrainingResult) -> None:
    assert trained.steps == TUNED.max_steps and len(trained.losses) == TUNED.max_steps
    first, last = trained.losses[:5], trained.losses[-5:]
    assert sum(last) / 5 < sum(first) / 5
    assert (trained.adapter_dir / "training.json").exists()


def test_crashed_training_resumes_to_the_same_adapter(
    tiny_model: str, examples: dict[str, list[TrainingExample]], tmp_path: Path
) -> None:
    train = split(examples, "train")
    config = TrainingConfig(lr=5e-3, max_steps=4, checkpoint_every=2)

    def crash(step: int, loss: float) -> None:
        if step == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_adapter(
            model=tiny_model,
            train=train,
            out_dir=tmp_path / "a",
            config=config,
            taxonomy=TAXONOMY,
            on_step=crash,
        )
    more = TrainingConfig(lr=5e-3, max_steps=5, checkpoint_every=2)
    resumed = train_adapter(
        model=tiny_model, train=train, out_dir=tmp_path / "a", config=more, taxonomy=TAXONOMY
    )
    straight = train_adapter(
        model=tiny_model, train=train, out_dir=tmp_path / "b", config=more, taxonomy=TAXONOMY
    )
    assert resumed.resumed_from == 2 and straight.resumed_from is None
    assert resumed.steps == straight.steps == 5
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    got = load_peft_weights(str(resumed.adapter_dir))
    want = load_peft_weights(str(straight.adapter_dir))
    assert got.keys() == want.keys() and got
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=0)


def test_trained_adapter_loads_and_learns_the_segment_prior(
    tiny_model: str, examples: dict[str, list[TrainingExample]], trained: TrainingResult
) -> None:
    test = split(examples, "test")
    scores = {
        name: score(tiny_model, adapter, test)
        for name, adapter in (("base", None), ("trained", str(trained.adapter_dir)))
    }
    print({name: score.to_dict() for name, score in scores.items()})
    # Rose from 0 to 1.0 in every setting tried (7): the adapter learns where segments lie.
    assert scores["trained"].tiou_at_05 > scores["base"].tiou_at_05


def test_lora_vision_adapts_the_vision_blocks_too(
    tiny_model: str, examples: dict[str, list[TrainingExample]], tmp_path: Path
) -> None:
    import json

    config = TrainingConfig(lr=1e-3, max_steps=1, lora_vision=True, train_modules=("merger",))
    result = train_adapter(
        model=tiny_model,
        train=split(examples, "train")[:4],
        out_dir=tmp_path,
        config=config,
        taxonomy=TAXONOMY,
    )
    adapter = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert "model\\.visual\\.blocks" in adapter["target_modules"]
    assert adapter["modules_to_save"] == ["merger"]
    from safetensors.torch import load_file

    names = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert any(".visual.blocks." in n and "lora_A" in n for n in names)
    assert any(".visual.merger." in n for n in names)
