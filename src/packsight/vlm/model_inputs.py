"""A batch of clips as the model's processor makes it: the chat prompt of each clip (plus the
constrained answer's fixed head), its frames and where they sit in the clip, left padded."""

from __future__ import annotations

from typing import Any

import torch
from transformers.video_utils import VideoMetadata

from packsight.labels.taxonomy import Taxonomy
from packsight.vlm.answer import HEAD
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.prompts import build_messages


def processor_inputs(
    processor, clips: list[ClipInput], *, taxonomy: Taxonomy, head: bool, device: torch.device
) -> Any:
    """The processor's output for decoded clips: token ids, masks and grids on the host, pixels
    on `device`. `head`: end each prompt with the constrained answer's fixed start."""
    texts = [
        processor.apply_chat_template(
            build_messages(
                taxonomy=taxonomy,
                clip_frame_count=clip.clip_frame_count,
                frame_indices=clip.frame_indices,
            ),
            tokenize=False,
            add_generation_prompt=True,
        )
        # The constrained answer starts with fixed text; it is part of the prefill.
        + (HEAD if head else "")
        for clip in clips
    ]
    metadata = [
        VideoMetadata(
            total_num_frames=clip.clip_frame_count,
            fps=clip.fps,
            frames_indices=list(clip.frame_indices),
        )
        for clip in clips
    ]
    return processor(
        text=texts,
        videos=[clip.frames for clip in clips],
        video_metadata=metadata,
        # Rescale, normalise and patchify on the model's device: on the CPU this costs as
        # much as the GPU's whole forward pass for a batch of clips.
        device=str(device),
        do_sample_frames=False,  # the clip's frames are already the sampled ones
        do_resize=False,
        cap_pixels_per_frame=False,
        padding=True,
        padding_side="left",  # generation appends on the right of every row
        return_tensors="pt",
    )
