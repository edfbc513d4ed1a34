"""Training batches built by the labeler itself (same chat template, HEAD and frame handling),
so training sees exactly what inference sees, and the loss over the answer tokens the decoder
reads (`AnswerFormat.answer_token_ids`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from packsight.labels.taxonomy import Taxonomy
from packsight.training.examples import TrainingExample
from packsight.vlm.answer import Answer
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import Labeler

IGNORE = -100


@dataclass
class TrainingBatch:
    inputs: dict = field(repr=False)  # processor output plus the answer, ready for forward
    labels: torch.Tensor  # [batch, seq]: answer ids (and <|im_end|>), IGNORE elsewhere
    keep: int  # logits_to_keep: the answer's predicting positions, the last `keep` of each row


def answer_for(example: TrainingExample, taxonomy: Taxonomy) -> Answer:
    truth = example.truth
    return Answer(
        operation=taxonomy.index(truth.dominant_operation),
        start_frame=truth.start_frame,
        end_frame=truth.end_frame,
        next_operation=taxonomy.index(truth.next_operation),
    )


def clip_input(example: TrainingExample) -> ClipInput:
    return ClipInput(
        frames=example.frames,
        clip_frame_count=example.clip_frame_count,
        frame_indices=example.frame_indices,
        fps=example.fps,
    )


def training_batch(labeler: Labeler, examples: Sequence[TrainingExample]) -> TrainingBatch:
    """Prompt + HEAD (built by the labeler, left padded) followed by answer + <|im_end|>.

    Every answer has the same token count (fixed format), so after left padding all answers end
    the rows together and one `logits_to_keep` covers exactly the supervised positions."""
    clips = [clip_input(e) for e in examples]
    for clip in clips:
        labeler._check(clip)
    inputs = dict(labeler._inputs(clips))
    answers = torch.tensor(
        [
            [
                *labeler.answer_format.answer_token_ids(answer_for(e, labeler.taxonomy)),
                labeler.eos_token_id,
            ]
            for e in examples
        ],
        device=inputs["input_ids"].device,
    )
    prompt = inputs["input_ids"]
    inputs["input_ids"] = torch.cat([prompt, answers], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answers)], 1)
    if "mm_token_type_ids" in inputs:  # transformers 5: answer tokens are text (type 0)
        types = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([types, types.new_zeros(answers.shape)], 1)
    labels = torch.full_like(inputs["input_ids"], IGNORE)
    # Only the decided tokens carry loss: the fixed text between them is fed at inference, and
    # ~40 fixed tokens would otherwise dominate the 8 that matter.
    decided = torch.tensor(labeler.answer_format.decision_positions(), device=answers.device)
    labels[:, prompt.shape[1] + decided] = answers[:, decided]
    # Position p predicts token p + 1: the answer's predictors start one before it.
    return TrainingBatch(inputs=inputs, labels=labels, keep=answers.shape[1] + 1)


def answer_loss(model: Any, batch: TrainingBatch) -> torch.Tensor:
    """Mean cross-entropy over the decided answer tokens, with full-vocabulary logits only at the
    positions that predict them (8 a row, not the whole ~50-token answer)."""
    # Rows are left padded to one length, so the supervised columns are the same in every row.
    supervised = (batch.labels != IGNORE).any(dim=0).nonzero().flatten()
    logits = model(**batch.inputs, logits_to_keep=supervised - 1, use_cache=False).logits
    targets = batch.labels[:, supervised]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )
