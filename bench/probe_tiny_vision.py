"""Do the tiny model's random features still separate the synthetic operations?

A nearest-class-mean probe over (a) plain RGB statistics of each clip's 8 frames, (b) the tiny
Qwen2-VL vision tower's pooled features and (c) the language model's final state where it
predicts the operation code, fitted on the U0101-U0106 clips of TINY_RECIPE's archive and
tested on U0108, for each tiny model size. Standardised, all of them keep the classes about as
well as RGB statistics do (0.4-0.6 on 34 test clips; 18 clips swing by 0.3). What differs is
(c)'s clip-to-clip spread, which the trained lm_head has to read: 0.10 of its norm with the
default size's 0.02 init, 0.25 with the "learnable" size, which fine-tunes markedly better.

    PYTHONPATH=src:. python bench/probe_tiny_vision.py      # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from packsight.labels.taxonomy import load_taxonomy
from packsight.training.batches import training_batch
from packsight.training.examples import TrainingExample, examples_for_video
from packsight.training.recipes import TINY_RECIPE
from packsight.training.windows import split_for_subject
from packsight.video.sampling import FrameSettings
from packsight.vlm.labeler import load_labeler
from packsight.vlm.tiny import SIZES, build_tiny_model

TAXONOMY = load_taxonomy(TINY_RECIPE.archive.taxonomy)
Features = Callable[[list[TrainingExample]], np.ndarray]


def rgb_statistics(examples: list[TrainingExample]) -> np.ndarray:
    pixels = [e.frames.reshape(-1, 3).astype(np.float64) for e in examples]
    return np.stack([np.concatenate([p.mean(0), p.std(0)]) for p in pixels])


def tower_features(model_dir: Path) -> Features:
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)

    def features(example: TrainingExample) -> np.ndarray:
        video = processor.video_processor(
            videos=[example.frames],
            do_resize=False,
            do_sample_frames=False,
            cap_pixels_per_frame=False,
            return_tensors="pt",
        )
        with torch.no_grad():
            tokens = model.model.get_video_features(
                video["pixel_values_videos"], video["video_grid_thw"]
            ).pooler_output
        tokens = torch.cat(list(tokens))
        return torch.cat([tokens.mean(0), tokens.std(0)]).numpy()

    return lambda examples: np.stack([features(e) for e in examples])


def answer_states(model_dir: Path) -> Features:
    """The final (normed) hidden state at the position that predicts the operation code."""
    labeler = load_labeler(
        model=str(model_dir), adapter=None, quantization="nf4", taxonomy=TAXONOMY
    )

    def features(examples: list[TrainingExample]) -> np.ndarray:
        states = []
        for k in range(0, len(examples), 8):
            batch = training_batch(labeler, examples[k : k + 8])
            prompt = batch.inputs["input_ids"].shape[1] - (batch.keep - 1)
            with torch.no_grad():
                out = labeler.model(**batch.inputs, output_hidden_states=True, use_cache=False)
            states.append(out.hidden_states[-1][:, prompt - 1].float().numpy())
        found = np.concatenate(states)
        spread = np.linalg.norm(found.std(0)) / np.linalg.norm(found.mean(0))
        print(f"  answer state: clip-to-clip spread {spread:.2f} of its mean's norm")
        return found

    return features


def probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    """Train and test accuracy of a nearest-class-mean classifier on standardised features."""
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    z = (features - mean) / std
    classes = sorted(set(labels[train]))
    centres = np.stack([z[train & (labels == c)].mean(0) for c in classes])
    predicted = np.array(classes)[((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)]
    hits = predicted == labels
    return float(hits[train].mean()), float(hits[~train].mean())


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="packsight-probe-"))
    videos = TINY_RECIPE.archive.write(root / "archive")
    examples = [
        e
        for v in videos
        if split_for_subject(v.user) in ("train", "test")
        for e in examples_for_video(
            v.path,
            v.segments,
            prefix=f"{v.user}_{v.session}",
            subject=v.user,
            taxonomy=TAXONOMY,
            frames=FrameSettings(max_side=TINY_RECIPE.max_side),
        )
    ]
    labels = np.array([TAXONOMY.index(e.truth.dominant_operation) for e in examples])
    train = np.array([split_for_subject(e.subject) == "train" for e in examples])
    extractors: list[tuple[str, Features]] = [("RGB statistics", rgb_statistics)]
    for size in SIZES:
        model_dir = build_tiny_model(root / size, size=size)  # type: ignore[arg-type]
        extractors.append((f"{size}: vision tower", tower_features(model_dir)))
        extractors.append((f"{size}: answer state", answer_states(model_dir)))
    for name, extract in extractors:
        fit, held_out = probe(extract(examples), labels, train)
        print(f"{name}: train {fit:.2f}, test {held_out:.2f} ({(~train).sum()} test clips)")


if __name__ == "__main__":
    main()
