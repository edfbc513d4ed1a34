"""The clip every GPU benchmark feeds the model: 8 frames sampled evenly from a 5 s window at
25 fps, as the CPU sampling stage stores them."""

from __future__ import annotations

FRAMES = 8
CLIP_FRAME_COUNT = 125  # 5 s at 25 fps
FRAME_INDICES = tuple(round(i * (CLIP_FRAME_COUNT - 1) / (FRAMES - 1)) for i in range(FRAMES))
