"""The retraining pipeline's data that needs no database or queue: a run's parameters and the
dataset from labelled videos (packsight.training.judging scores models on it and decides).

The training stage (packsight.pipeline.training) strings them together with storage and Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import Taxonomy
from packsight.training.examples import (
    TrainingExample,
    examples_for_video,
    production_examples,
    unique_ids,
    window_truths,
)
from packsight.training.windows import Segment, Split, procedure_successor, split_for_subject
from packsight.video.decode import VideoDecodeError
from packsight.video.identity import VideoIdentity, clip_prefix, identity_from_key
from packsight.video.sampling import SAMPLER, SAMPLERS, FrameSettings


class VideoUnavailableError(Exception):
    """`fetch` could not provide the video (deleted, moved, no access): skip it, name it."""


@dataclass(frozen=True)
class LabelledVideo:
    """A video whose verified labels cover it: where it is and its operation segments."""

    bucket: str
    key: str
    subject: str
    segments: list[Segment]
    session: str | None = None

    @property
    def clip_prefix(self) -> str:
        """Its clip ids' prefix, as labelling names the video's clips."""
        identity = identity_from_key(self.key).merged(VideoIdentity(self.subject, self.session))
        return clip_prefix(self.key, identity)


@dataclass(frozen=True)
class Splits:
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    test_clips: int = 30  # the first this many test clips by clip id; 0: every test clip


@dataclass(frozen=True)
class RunParams:
    """Everything a training run depends on, frozen when it is queued: a redelivered or resumed
    run trains with what it started with, whatever the settings say by then."""

    config: dict[str, Any]  # TrainingConfig fields
    splits: Splits
    bucket: str | None = None  # train on this bucket's labels only
    frames_per_clip: int = 8
    clip_seconds: float = 5.0
    max_side: int = 336
    promotion_metric: str = "AA@1"
    promotion_tolerance: float = 0.02
    motion_size: tuple[int, int] = (160, 120)
    baseline_margin: float = 0.05  # by how much OCA and AA@1 must beat every trivial baseline
    sampler: str = SAMPLER

    @property
    def frames(self) -> FrameSettings:
        """The frame settings the run trains and evaluates with (and its adapter is served with)."""
        return FrameSettings(
            frames_per_clip=self.frames_per_clip,
            clip_seconds=self.clip_seconds,
            max_side=self.max_side,
            motion_size=self.motion_size,
            sampler=self.sampler,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunParams:
        splits = data["splits"]
        motion = tuple(data.get("motion_size", (160, 120)))
        sampler = data.get("sampler", SAMPLERS[0])  # runs recorded before it was kept
        return cls(
            **{**data, "motion_size": motion, "sampler": sampler, "splits": Splits(
                train=tuple(splits["train"]),
                validation=tuple(splits["validation"]),
                test=tuple(splits["test"]),
                test_clips=splits["test_clips"],
            )}
        )  # fmt: skip


@dataclass
class Dataset:
    train: list[TrainingExample] = field(default_factory=list)
    validation: list[TrainingExample] = field(default_factory=list)
    test: list[TrainingExample] = field(default_factory=list)  # the fixed test clips only
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (bucket/key, why)
    # Per training video: the truths of the windows labelling cuts, in time order, and its
    # segments in seconds; the transition prior is learned from them.
    window_truths: list[list[ClipTruth]] = field(default_factory=list)
    segment_seconds: list[list[tuple[str, float]]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "train_clips": len(self.train),
            "validation_clips": len(self.validation),
            "test_clips": len(self.test),
            "test_clip_ids": [e.clip_id for e in self.test],
            "skipped_videos": [{"video": v, "error": e} for v, e in self.skipped],
        }

    def records(self) -> list[dict[str, object]]:
        """One line per clip: its split, sampled frames and the target answer, in the output's
        JSON shape, so what the model was taught can be read (and audited) without the code."""
        return [
            {
                "clip_id": e.clip_id,
                "split": split,
                "subject": e.subject,
                "clip_frame_count": e.clip_frame_count,
                "frame_indices": list(e.frame_indices),
                "target": {
                    "dominant_operation": e.truth.dominant_operation,
                    "temporal_segment": {
                        "start_frame": e.truth.start_frame,
                        "end_frame": e.truth.end_frame,
                    },
                    "anticipated_next_operation": e.truth.next_operation,
                },
            }
            for split, examples in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
            for e in examples
        ]


def build_dataset(
    videos: Sequence[LabelledVideo],
    fetch: Callable[[LabelledVideo], Path],
    *,
    taxonomy: Taxonomy,
    splits: Splits,
    frames: FrameSettings,
    seed: int = 42,
    on_video: Callable[[LabelledVideo], None] | None = None,
) -> Dataset:
    """Training, validation and test examples of the videos, by their subject's split.

    Training clips are centred around operation boundaries (and mid-operation); validation and
    test clips are exactly the windows labelling produces, sampled as labelling samples them, so
    a score says how the model labels the archive. `fetch` gives a local path of a video (or
    raises VideoUnavailableError). A video that cannot be fetched or read is skipped and named in
    `Dataset.skipped` (one bad or deleted file must not cancel the night's training); videos of
    subjects in no split are left out. The test and validation sets are each the first
    `splits.test_clips` windows (all with 0) in clip-id order, video by video in the order of
    their clip-id prefixes: only those are decoded, so a long test subject costs no memory.
    """
    dataset = Dataset()
    procedure_next = procedure_successor(taxonomy) if taxonomy.procedure else None
    by_split: dict[Split, list[LabelledVideo]] = {"train": [], "validation": [], "test": []}
    for video in sorted(videos, key=lambda v: (v.clip_prefix, v.bucket, v.key)):
        split = split_for_subject(
            video.subject, train=splits.train, validation=splits.validation, test=splits.test
        )
        if split is not None:
            by_split[split].append(video)
    for split, chosen in by_split.items():
        room = None if split == "train" or not splits.test_clips else splits.test_clips
        for video in chosen:
            if room == 0:
                break
            if on_video is not None:
                on_video(video)
            prefix = video.clip_prefix
            try:
                path = fetch(video)
                if split == "train":
                    truths, seconds = window_truths(
                        path,
                        video.segments,
                        taxonomy=taxonomy,
                        clip_seconds=frames.clip_seconds,
                        procedure_next=procedure_next,
                    )
                    examples = examples_for_video(
                        path,
                        video.segments,
                        seed=seed,
                        prefix=prefix,
                        subject=video.subject,
                        taxonomy=taxonomy,
                        frames=frames,
                        procedure_next=procedure_next,
                    )
                else:
                    examples = production_examples(
                        path,
                        video.segments,
                        limit=room,
                        video=f"{video.bucket}/{video.key}",
                        prefix=prefix,
                        subject=video.subject,
                        taxonomy=taxonomy,
                        frames=frames,
                        procedure_next=procedure_next,
                    )
            except (VideoUnavailableError, VideoDecodeError, ValueError, OSError) as exc:
                where = f"{video.bucket}/{video.key}"
                dataset.skipped.append((where, f"{type(exc).__name__}: {exc}"))
                continue
            getattr(dataset, split).extend(examples)
            if split == "train":
                dataset.window_truths.append(truths)
                dataset.segment_seconds.append(seconds)
            if room is not None:
                room -= len(examples)
    # One recording labelled in two buckets gives two videos the same clip ids; a score needs
    # each clip once by name, so the later copies get _2, _3, ... (as training windows do).
    for examples in (dataset.validation, dataset.test):
        examples[:] = sorted(_with_unique_ids(examples), key=lambda e: e.clip_id)
    return dataset


def _with_unique_ids(examples: list[TrainingExample]) -> list[TrainingExample]:
    names = unique_ids([e.clip_id for e in examples])
    return [
        e if e.clip_id == name else replace(e, clip_id=name, truth=replace(e.truth, clip_id=name))
        for e, name in zip(examples, names, strict=True)
    ]
