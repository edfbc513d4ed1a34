"""Lockstep constrained decoding over a KV cache: one prefill, then one small forward per
decision (code, digit), with the fixed text between decisions fed as a single chunk.

Every row of a batch takes the same decisions in the same order, so chunks have one length
and no row ever waits for another. A decision picks the most probable allowed token; its
probability, renormalised over the allowed tokens, is the model's confidence in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from packsight.vlm.answer import DIGITS, Answer, AnswerFormat
from packsight.vlm.prefill import HOST_VISION, prefill
from packsight.vlm.transfer import longs

if TYPE_CHECKING:
    from transformers import Cache


@dataclass
class Decision:
    """Per-row results of one decision, kept on the device (no host sync mid-answer)."""

    tokens: torch.Tensor  # [batch] chosen token ids
    index: torch.Tensor  # [batch] chosen position within the candidates
    probability: torch.Tensor  # [batch]
    probabilities: torch.Tensor  # [batch, candidates]: every candidate's, summing to 1


@dataclass(frozen=True)
class Decoded:
    """One row's answer, the dominant operation's probability (the confidence), and the model's
    probability for every operation of the taxonomy, as dominant and as next operation."""

    answer: Answer
    confidence: float
    operation_probabilities: tuple[float, ...]
    next_probabilities: tuple[float, ...]


# What the models' `get_rope_index` reads from the processor's output (Qwen2.5-VL also places
# frames in time by `second_per_grid_ts`; Qwen2-VL's takes and ignores it).
ROPE_INPUTS = (
    "input_ids",
    "mm_token_type_ids",
    "image_grid_thw",
    "video_grid_thw",
    "second_per_grid_ts",
    "attention_mask",
)


# The prompt's attention mask as the host prepared it, beside the device copy (the labeler adds
# it with `fewer_syncs`): masks built from it need no read from the GPU. Never given the model.
HOST_MASK = "packsight_host_attention_mask"


@dataclass
class Queued:
    """A batch's answers on their way to the host: `_answer`'s tensors, copied into pinned
    host memory behind the batch's work on a CUDA device, with an event that marks the copy
    done. The copy is queued at once, before any later batch can reuse the device tensors
    (a replayed graph writes its answers into the same buffers every time)."""

    rows: torch.Tensor
    evidence: torch.Tensor
    done: torch.cuda.Event | None = None

    @classmethod
    def of(cls, rows: torch.Tensor, evidence: torch.Tensor) -> Queued:
        if rows.device.type != "cuda":
            return cls(rows, evidence)
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in (rows, evidence)]
        for into, source in zip(host, (rows, evidence), strict=True):
            into.copy_(source, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return cls(host[0], host[1], done)

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.done is not None:
            self.done.synchronize()  # the batch's one wait for the device
        return self.rows, self.evidence


def choose(
    logits: torch.Tensor, candidates: torch.Tensor, allowed: torch.Tensor | None
) -> Decision:
    """Pick among `candidates` (token ids) per row; `allowed` [batch, n] masks some out.

    Garbage logits (NaN, inf) cannot break the answer: NaN counts as -inf, and a row with no
    finite allowed score falls back to a uniform choice over what is allowed."""
    scores = logits[:, candidates].float()
    scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    hopeless = torch.isinf(scores).all(dim=-1, keepdim=True)
    uniform = torch.zeros_like(scores)
    if allowed is not None:
        uniform = uniform.masked_fill(~allowed, float("-inf"))
    scores = torch.where(hopeless, uniform, scores)
    probabilities = torch.softmax(scores, dim=-1)
    best = probabilities.argmax(dim=-1)
    chosen = probabilities.gather(1, best[:, None])[:, 0]
    return Decision(
        tokens=candidates[best], index=best, probability=chosen, probabilities=probabilities
    )


def allowed_digit_mask(
    prefix: torch.Tensor, remaining: int, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """`allowed_digits` for a whole batch at once, on the device: [batch, 10]."""
    span = 10**remaining
    smallest = (prefix[:, None] * 10 + torch.arange(10, device=prefix.device)) * span
    return (smallest <= high[:, None]) & (smallest + span - 1 >= low[:, None])


class LockstepDecoder:
    """Runs the answer's decisions for a batch whose prompts (ending in HEAD) are prefilled."""

    # Per-batch state, set by `decode`.
    mask: torch.Tensor  # [batch, tokens so far] attention mask
    deltas: torch.Tensor  # the prefill's M-RoPE position offsets
    cache: Cache | None  # the KV cache; None between batches
    # Token ids on the device, set by `_constants`.
    code_ids: torch.Tensor
    digit_ids: torch.Tensor
    after_operation: torch.Tensor
    between: torch.Tensor
    after_end: torch.Tensor
    nothing: torch.Tensor

    def __init__(self, model, answer_format: AnswerFormat) -> None:
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

    def _feed(self, chosen: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self._forward(torch.cat([chosen[:, None], fixed.expand(len(chosen), -1)], dim=1))

    def _number(
        self, logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor, fixed_after: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decide a zero-padded number per row within [low, high]; returns the values and the
        logits after feeding its last digit plus `fixed_after`."""
        values = torch.zeros_like(low)
        for position in range(DIGITS):
            remaining = DIGITS - position - 1
            allowed = allowed_digit_mask(values, remaining, low, high)
            decision = choose(logits, self.digit_ids, allowed)
            values = values * 10 + decision.index
            logits = self._feed(decision.tokens, fixed_after if remaining == 0 else self.nothing)
        return values, logits

    def reset(self) -> None:
        """Drop per-batch state (the KV cache), e.g. before a smaller batch after an OOM."""
        self.cache = None

    def _constants(self, device: torch.device) -> None:
        # Host-to-device copies of small lists synchronise the stream: make every constant
        # up front, so the decisions queue on the GPU without waiting for each other. Made
        # once: a captured CUDA graph keeps reading them at the same addresses.
        if getattr(self, "_constants_on", None) == device:
            return
        self._constants_on = device
        on_device = lambda ids: torch.tensor(ids, device=device, dtype=torch.long)  # noqa: E731
        self.code_ids, self.digit_ids = (
            on_device(self.format.code_ids),
            on_device(self.format.digit_ids),
        )
        self.after_operation = on_device(self.format.after_operation)
        self.between = on_device(self.format.between_frames)
        self.after_end = on_device(self.format.after_end)
        self.nothing = on_device([])

    def chunk_lengths(self) -> list[int]:
        """Tokens fed by each of the answer's forwards, in order (code, 3 + 3 digits)."""
        fmt = self.format
        digits = [1] * (DIGITS - 1)
        return [
            1 + len(fmt.after_operation),
            *digits,
            1 + len(fmt.between_frames),
            *digits,
            1 + len(fmt.after_end),
        ]

    def _answer(self, logits: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decisions after the prefill's `logits`, as device tensors: operation index,
        start, end, next operation index, and both codes' probabilities side by side."""
        operation = choose(logits, self.code_ids, None)
        logits = self._feed(operation.tokens, self.after_operation)
        starts, logits = self._number(logits, torch.zeros_like(last), last, self.between)
        ends, logits = self._number(logits, starts, last, self.after_end)
        # The last decision needs these logits only, not another forward.
        following = choose(logits, self.code_ids, None)
        evidence = torch.cat([operation.probabilities, following.probabilities], dim=1)
        return torch.stack([operation.index, starts, ends, following.index]).T, evidence

    def positions(self, features: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's M-RoPE positions [3, batch, length] and offsets [batch, 1], computed by
        the model's own function on the processor's host tensors, before they go to the GPU.
        On the device the same function loops over the rows with a host sync in each, after
        the vision tower, so the GPU idles through it; here it runs while the GPU still works
        on the previous batch. Same function, same integers: the same answers."""
        given = {
            name: value.cpu() if isinstance(value, torch.Tensor) else value
            for name in ROPE_INPUTS
            if (value := features.get(name)) is not None
        }
        return self._vlm.get_rope_index(given.pop("input_ids"), **given)

    def _prefill(self, inputs: dict) -> torch.Tensor:
        """Run the prompt; keeps its KV cache and M-RoPE offsets, returns its last logits.
        `inputs` may hold `position_ids` and `rope_deltas` from `positions`, and with them
        the batch's `HostVision` (prefill.py)."""
        self.mask = inputs["attention_mask"]
        host = inputs.get(HOST_VISION)
        if host is not None:
            out = prefill(self.model, inputs, host)
        else:
            skipped = ("rope_deltas", HOST_MASK, HOST_VISION)
            given = {k: v for k, v in inputs.items() if k not in skipped}
            out = self.model(**given, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        deltas = inputs.get("rope_deltas")
        self.deltas = (self._vlm.rope_deltas if deltas is None else deltas).to(self.mask.device)
        return out.logits[:, -1]

    def decode(self, inputs: dict, frame_counts: list[int]) -> list[Decoded]:
        """Every row's answer, with its operation probabilities."""
        return self.collect(self.submit(inputs, frame_counts))

    @torch.inference_mode()
    def submit(self, inputs: dict, frame_counts: list[int]) -> Queued:
        """Queue the batch's prefill and decisions on the device, and the copy of their
        answers to the host, without waiting for any of it (`collect` waits)."""
        device = inputs["attention_mask"].device
        self._constants(device)
        last = longs(frame_counts, device) - 1
        logits = self._prefill(inputs)
        rows, evidence = self._answer(logits, last)
        self.cache = None  # free the KV cache before the next batch
        return Queued.of(rows, evidence)

    def collect(self, queued: Queued) -> list[Decoded]:
        """A submitted batch's answers, once the device has them."""
        return self.rows(*queued.read())

    def rows(self, rows: torch.Tensor, evidence: torch.Tensor) -> list[Decoded]:
        """`_answer`'s tensors as one `Decoded` per row: the answer's only read, on the host."""
        kinds = len(self.format.code_ids)
        return [
            Decoded(
                Answer(op, start, end, nxt),
                confidence=both[op],
                operation_probabilities=tuple(both[:kinds]),
                next_probabilities=tuple(both[kinds:]),
            )
            for (op, start, end, nxt), both in zip(rows.tolist(), evidence.tolist(), strict=True)
        ]
