"""Lockstep constrained decoding over a KV cache: one prefill, then one small forward per
decision (code, digit), with the fixed text between decisions fed as a single chunk.

Every row of a batch takes the same decisions in the same order, so chunks have one length
and no row ever waits for another. A decision picks the most probable allowed token; its
probability, renormalised over the allowed tokens, is the model's confidence in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from packsight.vlm.answer import DIGITS, Answer, AnswerFormat, allowed_digits


@dataclass
class Decision:
    tokens: torch.Tensor  # [batch] chosen token ids
    index: list[int]  # chosen position within the allowed list, per row
    probability: list[float]


def choose(logits: torch.Tensor, candidates: list[int], allowed: torch.Tensor | None) -> Decision:
    """Pick among `candidates` (token ids) per row; `allowed` [batch, n] masks some out.

    Garbage logits (NaN, inf) cannot break the answer: NaN counts as -inf, and a row with no
    finite allowed score falls back to a uniform choice over what is allowed."""
    scores = logits[:, candidates].float()
    scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    hopeless = torch.isinf(scores).all(dim=-1) | torch.isnan(scores).any(dim=-1)
    if hopeless.any():
        fallback = torch.zeros_like(scores)
        if allowed is not None:
            fallback = fallback.masked_fill(~allowed, float("-inf"))
        scores = torch.where(hopeless[:, None], fallback, scores)
    probabilities = torch.softmax(scores, dim=-1)
    best = probabilities.argmax(dim=-1)
    chosen = probabilities.gather(1, best[:, None])[:, 0]
    ids = torch.tensor(candidates, device=logits.device)[best]
    return Decision(tokens=ids, index=best.tolist(), probability=chosen.tolist())


class LockstepDecoder:
    """Runs the answer's decisions for a batch whose prompts (ending in HEAD) are prefilled."""

    def __init__(self, model, answer_format: AnswerFormat) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.format = answer_format
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._vlm = base.model  # holds the rope deltas computed at prefill

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """Feed `chunk` [batch, n] after what the cache holds; logits of its last position."""
        batch, length = chunk.shape
        self.mask = torch.cat([self.mask, self.mask.new_ones(batch, length)], dim=1)
        # M-RoPE positions of text after the video: the row's count of real tokens so far plus
        # the offset the prefill computed (vision tokens advance positions unevenly).
        text = (self.mask.long().cumsum(-1) - 1)[:, -length:]
        positions = (text + self.deltas).unsqueeze(0).expand(3, -1, -1)
        out = self.model(
            input_ids=chunk,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def _feed(self, chosen: torch.Tensor, fixed: list[int]) -> torch.Tensor:
        tail = torch.tensor(fixed, device=chosen.device, dtype=chosen.dtype)
        return self._forward(torch.cat([chosen[:, None], tail.expand(len(chosen), -1)], dim=1))

    def _number(
        self, logits: torch.Tensor, low: list[int], high: list[int], fixed_after: list[int]
    ) -> tuple[list[int], torch.Tensor]:
        """Decide a zero-padded number per row within [low, high]; returns values and the
        logits after feeding its last digit plus `fixed_after`."""
        values = [0] * len(low)
        for position in range(DIGITS):
            remaining = DIGITS - position - 1
            allowed = torch.tensor(
                [
                    allowed_digits(v, remaining, lo, hi)
                    for v, lo, hi in zip(values, low, high, strict=True)
                ],
                device=logits.device,
            )
            decision = choose(logits, self.format.digit_ids, allowed)
            values = [v * 10 + d for v, d in zip(values, decision.index, strict=True)]
            fixed = fixed_after if remaining == 0 else []
            logits = self._feed(decision.tokens, fixed)
        return values, logits

    @torch.inference_mode()
    def decode(self, inputs: dict, frame_counts: list[int]) -> list[tuple[Answer, float]]:
        """The answer and the dominant operation's probability for every row."""
        self.mask = inputs["attention_mask"]
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.deltas = self._vlm.rope_deltas.to(self.mask.device)
        codes = self.format.code_ids

        operation = choose(out.logits[:, -1], codes, None)
        logits = self._feed(operation.tokens, self.format.after_operation)
        last = [n - 1 for n in frame_counts]
        starts, logits = self._number(logits, [0] * len(last), last, self.format.between_frames)
        ends, logits = self._number(logits, starts, last, self.format.after_end)
        # The last decision needs these logits only, not another forward.
        following = choose(logits, codes, None)
        self.cache = None  # free the KV cache before the next batch
        return [
            (Answer(op, start, end, nxt), p)
            for op, start, end, nxt, p in zip(
                operation.index, starts, ends, following.index, operation.probability, strict=True
            )
        ]
