"""The labeler's unconstrained path (`constrained=False`): plain greedy `generate`, then parsing.
It can produce unparseable answers; it is the baseline the benchmark compares against."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import Taxonomy
from packsight.vlm.parsing import OutputParseError, parse_prediction


class _ChosenTokenRecorder(LogitsProcessor):
    """Unconstrained mode: the probability of each greedy choice, per row and step."""

    def __init__(self, batch: int) -> None:
        self.log_probs: list[list[float]] = [[] for _ in range(batch)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values.cpu().tolist()
        for row, value in enumerate(best):
            self.log_probs[row].append(value)
        return scores


def generate_free_form(
    model: Any,
    tokenizer: Any,
    inputs: Any,
    counts: list[int],
    *,
    taxonomy: Taxonomy,
    max_new_tokens: int,
    stop_token_ids: list[int],
    pad_token_id: int,
) -> list[ClipPrediction | OutputParseError]:
    """One prediction or parse error per row of `inputs` (processor output, left padded);
    `counts` are the rows' clip frame counts."""
    prompt_length = inputs["input_ids"].shape[1]
    recorder = _ChosenTokenRecorder(len(counts))
    sequences = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        # A repetition penalty (Qwen2.5-VL's config ships 1.05) would distort confidences.
        repetition_penalty=1.0,
        eos_token_id=stop_token_ids,
        pad_token_id=pad_token_id,
        logits_processor=LogitsProcessorList([recorder]),
    )
    results: list[ClipPrediction | OutputParseError] = []
    for row, tokens in enumerate(sequences[:, prompt_length:].tolist()):
        stops = [i for i, t in enumerate(tokens) if t in stop_token_ids]
        if stops:
            tokens = tokens[: stops[0] + 1]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        # No reliable token span for the operation here: the geometric mean of the chosen
        # tokens' probabilities stands in for a confidence.
        steps = recorder.log_probs[row][: len(tokens)]
        confidence = math.exp(sum(steps) / len(steps)) if steps else 0.0
        try:
            results.append(
                parse_prediction(
                    text,
                    taxonomy=taxonomy,
                    clip_frame_count=counts[row],
                    confidence=confidence,
                )
            )
        except OutputParseError as exc:
            results.append(exc)
    return results
