"""Grammar-constrained greedy decoding of the answer JSON.

The answer is a fixed template with three kinds of holes: an operation (a trie over the token ids
of the taxonomy's names), and two frame numbers (single-digit tokens, as Qwen's tokenizer splits
digits, kept inside the clip and with end >= start). At every step the logits processor allows
only the tokens that keep the text inside the grammar, so any weights, even random ones, produce
a parseable answer; the model still chooses among the allowed tokens, and the probability it
gives the chosen operation (renormalised over the allowed tokens) is the prediction's confidence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

from packsight.taxonomy import Taxonomy

# Template pieces between the holes; each kind of hole is followed by a fixed piece whose first
# token ends the hole (no operation name or digit contains a quote, comma or brace).
TEMPLATE = (
    ("fixed", '{"dominant_operation": "'),
    ("operation", "dominant"),
    ("fixed", '", "temporal_segment": {"start_frame": '),
    ("number", "start"),
    ("fixed", ', "end_frame": '),
    ("number", "end"),
    ("fixed", '}, "anticipated_next_operation": "'),
    ("operation", "next"),
    ("fixed", '"}'),
)


class OffGrammarError(RuntimeError):
    """A generated token is outside the grammar (only if something else edited the logits)."""


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    terminal: bool = False


@dataclass
class _Walk:
    """Where a token sequence stands in the template after walking it."""

    segment: int = 0
    fixed_pos: int = 0
    node: _TrieNode | None = None
    digits: str = ""
    numbers: dict[str, int] = field(default_factory=dict)


def _number_prefix_ok(prefix: str, low: int, high: int) -> bool:
    """Can some integer written as `prefix` plus more digits (no leading zero) be in range?"""
    if len(prefix) > 1 and prefix[0] == "0":
        return False
    value = int(prefix)
    if value == 0:
        return low <= 0 <= high
    scale = 1
    while value * scale <= high:
        if (value + 1) * scale - 1 >= low:
            return True
        scale *= 10
    return False


class AnswerGrammar:
    """The answer template tokenised with one tokenizer, for one taxonomy."""

    def __init__(self, *, tokenizer, taxonomy: Taxonomy, eos_token_id: int) -> None:
        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        self.eos_token_id = eos_token_id
        self.fixed = {i: encode(text) for i, (kind, text) in enumerate(TEMPLATE) if kind == "fixed"}
        self.fixed[len(TEMPLATE)] = (eos_token_id,)
        self.digit_ids: dict[int, str] = {}
        for digit in "0123456789":
            ids = encode(digit)
            if len(ids) != 1:
                raise ValueError(f"tokenizer does not keep digit {digit!r} as one token: {ids}")
            self.digit_ids[ids[0]] = digit
        self.trie = _TrieNode()
        self.max_operation_tokens = 0
        for op in taxonomy.operations:
            # The JSON spelling, so a name with a quote or backslash still yields valid JSON.
            ids = encode(json.dumps(op)[1:-1])
            self.max_operation_tokens = max(self.max_operation_tokens, len(ids))
            node = self.trie
            for token in ids:
                node = node.children.setdefault(token, _TrieNode())
            node.terminal = True

    def max_tokens(self, clip_frame_count: int) -> int:
        """An upper bound on the answer's length in tokens, end-of-turn included."""
        digits = len(str(clip_frame_count - 1))
        fixed = sum(len(ids) for ids in self.fixed.values())
        return fixed + 2 * self.max_operation_tokens + 2 * digits

    def _range(self, name: str, walk: _Walk, clip_frame_count: int) -> tuple[int, int]:
        low = walk.numbers["start"] if name == "end" else 0
        return low, clip_frame_count - 1

    def walk(
        self, tokens: list[int], clip_frame_count: int, state: _Walk | None = None
    ) -> tuple[_Walk, list[str]]:
        """Follow `tokens` through the template (from `state`, else from the start); also
        name the hole each token was chosen in."""
        state, chosen_in = state or _Walk(), []
        for token in tokens:
            if state.segment > len(TEMPLATE):
                break  # the answer is complete; what follows is generate's padding
            chosen_in.append(self._hole_name(state))
            self._advance(state, token, clip_frame_count)
        return state, chosen_in

    def _hole_name(self, state: _Walk) -> str:
        if state.segment < len(TEMPLATE) and TEMPLATE[state.segment][0] != "fixed":
            return TEMPLATE[state.segment][1]
        return ""

    def _enter(self, state: _Walk, segment: int) -> None:
        state.segment, state.fixed_pos, state.digits = segment, 0, ""
        state.node = (
            self.trie if segment < len(TEMPLATE) and TEMPLATE[segment][0] == "operation" else None
        )

    def _advance(self, state: _Walk, token: int, clip_frame_count: int) -> None:
        if state.segment in self.fixed:
            expected = self.fixed[state.segment]
            if token != expected[state.fixed_pos]:
                raise OffGrammarError(f"expected token {expected[state.fixed_pos]}, got {token}")
            state.fixed_pos += 1
            if state.fixed_pos == len(expected):
                self._enter(state, state.segment + 1)
            return
        if token in self._allowed_in_hole(state, clip_frame_count, ends=False):
            if state.node is not None:
                state.node = state.node.children[token]
            else:
                state.digits += self.digit_ids[token]
            return
        if token in self._allowed_in_hole(state, clip_frame_count, ends=True):
            kind, name = TEMPLATE[state.segment]
            if kind == "number":
                state.numbers[name] = int(state.digits)
            self._enter(state, state.segment + 1)
            self._advance(state, token, clip_frame_count)
            return
        raise OffGrammarError(f"token {token} is not allowed in {TEMPLATE[state.segment]}")

    def _allowed_in_hole(self, state: _Walk, clip_frame_count: int, *, ends: bool) -> set[int]:
        """Tokens that continue the hole (ends=False) or close it (ends=True)."""
        kind, name = TEMPLATE[state.segment]
        closing = self.fixed[state.segment + 1][0]
        if kind == "operation":
            assert state.node is not None
            if ends:
                return {closing} if state.node.terminal else set()
            return set(state.node.children)
        low, high = self._range(name, state, clip_frame_count)
        if ends:
            done = bool(state.digits) and low <= int(state.digits) <= high
            return {closing} if done and _number_prefix_ok(state.digits, low, high) else set()
        return {
            t for t, d in self.digit_ids.items() if _number_prefix_ok(state.digits + d, low, high)
        }

    def allowed(self, state: _Walk, clip_frame_count: int) -> list[int]:
        """Tokens allowed next; empty once the answer is complete."""
        if state.segment > len(TEMPLATE):
            return []
        if state.segment in self.fixed:
            return [self.fixed[state.segment][state.fixed_pos]]
        grow = self._allowed_in_hole(state, clip_frame_count, ends=False)
        close = self._allowed_in_hole(state, clip_frame_count, ends=True)
        return sorted(grow | close)


class ConstrainedAnswerProcessor(LogitsProcessor):
    """Masks each row's logits to its grammar and records the renormalised choice probabilities.

    Must be the last logits processor, so greedy search picks the argmax of what it returns.
    """

    def __init__(
        self,
        grammar: AnswerGrammar,
        *,
        clip_frame_counts: list[int],
        prompt_length: int,
        pad_token_id: int,
    ) -> None:
        self.grammar = grammar
        self.clip_frame_counts = clip_frame_counts
        self.prompt_length = prompt_length
        self.pad_token_id = pad_token_id
        # Per row and step: {token: probability} where the model had a real choice.
        self.choices: list[list[dict[int, float] | None]] = [[] for _ in clip_frame_counts]
        self._states: list[_Walk | None] = [_Walk() for _ in clip_frame_counts]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Only the newest token is new: each row's walk state is kept between steps.
        newest = input_ids[:, -1].tolist() if input_ids.shape[1] > self.prompt_length else None
        allowed_rows = []
        for row, count in enumerate(self.clip_frame_counts):
            state = self._states[row]
            try:
                if state is None:
                    raise OffGrammarError("the row left the grammar earlier")
                if newest is not None:
                    self.grammar.walk([newest[row]], count, state)
                allowed = self.grammar.allowed(state, count)
            except OffGrammarError:
                self._states[row] = None
                allowed = [self.grammar.eos_token_id]  # end it; parsing will report the row
            allowed_rows.append(allowed or [self.pad_token_id])  # finished rows get padding
        # One gather/scatter for the whole batch: rows are padded to the same width by repeating
        # their first allowed id, and the repeats are left out of the softmax.
        width = max(len(a) for a in allowed_rows)
        index = torch.tensor(
            [a + [a[0]] * (width - len(a)) for a in allowed_rows], device=scores.device
        )
        real = torch.tensor(
            [[i < len(a) for i in range(width)] for a in allowed_rows], device=scores.device
        )
        picked = scores.gather(1, index)
        probs = torch.softmax(picked.float().masked_fill(~real, -math.inf), dim=-1).cpu().tolist()
        masked = torch.full_like(scores, -math.inf)
        masked.scatter_(1, index, picked)
        for row, allowed in enumerate(allowed_rows):
            if len(allowed) > 1:
                self.choices[row].append({t: probs[row][i] for i, t in enumerate(allowed)})
            else:
                self.choices[row].append(None)
        return masked

    def operation_probability(self, row: int, tokens: list[int], hole: str) -> float:
        """Probability of the operation chosen in `hole` ("dominant" or "next") for one row."""
        try:
            _, chosen_in = self.grammar.walk(tokens, self.clip_frame_counts[row])
        except OffGrammarError:
            return 0.0  # no operation was chosen within the grammar
        probability = 1.0
        for step, (token, name) in enumerate(zip(tokens, chosen_in, strict=False)):
            choice = self.choices[row][step] if step < len(self.choices[row]) else None
            if name == hole and choice is not None:
                probability *= choice.get(token, 0.0)
        return probability
