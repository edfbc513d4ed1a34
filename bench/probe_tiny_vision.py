"""Do the tiny model's random vision features still separate the synthetic operations?

A nearest-class-mean probe over (a) plain RGB statistics of each clip's 8 frames and (b) the tiny
Qwen2-VL vision tower's pooled features, fitted on the U0101-U0106 clips and tested on U0108.
If (a) separates the classes and (b) does not, fine-tuning the tiny model needs its vision side
trainable: LoRA on the language model alone cannot recover what the tower lost.

    PYTHONPATH=. python bench/probe_tiny_vision.py      # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from packsight.synth import write_synthetic_archive
from packsight.taxonomy import load_taxonomy
from packsight.training_examples import TrainingExample, examples_for_video
from packsight.training_set import split_for_subject
from packsight.vlm.tiny import build_tiny_model

TAXONOMY = load_taxonomy("assignment")


def rgb_statistics(example: TrainingExample) -> np.ndarray:
    pixels = example.frames.reshape(-1, 3).astype(np.float64)
    return np.concatenate([pixels.mean(0), pixels.std(0)])


def tower_features(model_dir: Path) -> Callable[[TrainingExample], np.ndarray]:
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
    videos = write_synthetic_archive(
        root / "archive", videos=9, seed=42, min_seconds=24, max_seconds=40
    )
    examples = [
        e
        for v in videos
        for e in examples_for_video(
            v.path, v.segments, video_key=v.key, subject=v.user, taxonomy=TAXONOMY, max_side=112
        )
    ]
    labels = np.array([TAXONOMY.index(e.truth.dominant_operation) for e in examples])
    train = np.array([split_for_subject(e.subject) == "train" for e in examples])
    tower = tower_features(build_tiny_model(root / "tiny"))
    for name, extract in (("RGB statistics", rgb_statistics), ("tiny vision tower", tower)):
        fit, held_out = probe(np.stack([extract(e) for e in examples]), labels, train)
        print(f"{name}: train {fit:.2f}, test {held_out:.2f} ({(~train).sum()} test clips)")


if __name__ == "__main__":
    main()
