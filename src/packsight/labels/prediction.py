"""A model's answer for one clip, as the labeller, the metrics and the results share it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipPrediction:
    dominant_operation: str
    start_frame: int
    end_frame: int
    anticipated_next_operation: str
    confidence: float
    raw_output: str = ""
    # The model's probability of every operation of the taxonomy (in its order) as the dominant
    # and as the next one, where the decoder knows them (constrained decoding): the evidence a
    # whole-video timeline weighs against the procedure's prior.
    operation_probabilities: tuple[float, ...] | None = None
    next_probabilities: tuple[float, ...] | None = None

    def to_json(self, clip_id: str) -> dict:
        """The per-clip record of the challenge's results format."""
        return {
            "clip_id": clip_id,
            "dominant_operation": self.dominant_operation,
            "temporal_segment": {"start_frame": self.start_frame, "end_frame": self.end_frame},
            "anticipated_next_operation": self.anticipated_next_operation,
            "confidence": self.confidence,
        }
