"""The instruction the VLM gets for one clip, in Qwen chat format.

The prompt is deterministic (no dates, no randomness) so that a clip labelled twice with the same
model gets the same input, and fine-tuning sees exactly what inference will see.
"""

from __future__ import annotations

from collections.abc import Sequence

from packsight.labels.taxonomy import Taxonomy
from packsight.vlm.answer import code_legend

ANSWER_TEMPLATE = (
    '{"dominant_operation": "<code>", '
    '"temporal_segment": {"start_frame": <frame>, "end_frame": <frame>}, '
    '"anticipated_next_operation": "<code>"}'
)


def build_instruction(
    *, taxonomy: Taxonomy, clip_frame_count: int, frame_indices: Sequence[int]
) -> str:
    """The text part of the user turn."""
    if clip_frame_count < 1:
        raise ValueError(f"clip_frame_count must be at least 1, got {clip_frame_count}")
    if not frame_indices:
        raise ValueError("frame_indices must name at least one clip frame")
    bad = [i for i in frame_indices if not 0 <= i < clip_frame_count]
    if bad:
        raise ValueError(
            f"frame_indices {bad} lie outside the clip's frames 0..{clip_frame_count - 1}"
        )
    last = clip_frame_count - 1
    shown = ", ".join(str(i) for i in frame_indices)
    # Kept short: every prompt token is prefilled for every clip.
    return (
        f"Packaging clip of {clip_frame_count} frames, numbered 0 to {last}; shown: clip frames "
        f"{shown}.\n"
        f"Operations: {code_legend(taxonomy)}.\n"
        "Answer in JSON with the code of the operation that fills most of the clip, its first "
        f"and last clip frame (0 to {last}, three digits, e.g. 007) and the code of the next "
        f"operation: {ANSWER_TEMPLATE}"
    )


def build_messages(
    *, taxonomy: Taxonomy, clip_frame_count: int, frame_indices: Sequence[int]
) -> list[dict]:
    """Chat messages with one video placeholder; the frames go to the processor separately."""
    text = build_instruction(
        taxonomy=taxonomy, clip_frame_count=clip_frame_count, frame_indices=frame_indices
    )
    return [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": text}],
        }
    ]
