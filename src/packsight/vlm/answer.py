"""The answer format the model is asked for, decoded with one model decision per token.

Operations are multiple-choice codes (A, B, C, ...: one token each, listed in the prompt) and
frame numbers are three zero-padded digits. Every row of a batch then needs exactly the same
number of decisions: one code, 3 + 3 digits, one code. Everything between the decisions is fixed
text, fed to the model in one chunk instead of one decoding step per token. Training builds its
targets with `answer_token_ids`, so the fine-tuned model learns exactly the tokens read here.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass

from packsight.labels.taxonomy import Taxonomy

# Names the prompt and answer format below: an adapter is trained to answer in one format and
# served in the same; change it with any change a trained model would notice.
ANSWER_FORMAT = "codes-3digits-1"
DIGITS = 3  # frame numbers up to 999: 5 s clips at up to 199 fps, 10 s at 99 fps
HEAD = '{"dominant_operation": "'
AFTER_OPERATION = '", "temporal_segment": {"start_frame": '
BETWEEN_FRAMES = ', "end_frame": '
AFTER_END = '}, "anticipated_next_operation": "'
TAIL = '"}'


def operation_codes(taxonomy: Taxonomy) -> list[str]:
    """One capital letter per operation, in taxonomy order."""
    if len(taxonomy.operations) > len(string.ascii_uppercase):
        raise ValueError(
            f"taxonomy {taxonomy.name!r} has {len(taxonomy.operations)} operations; the answer "
            f"format codes at most {len(string.ascii_uppercase)}"
        )
    return list(string.ascii_uppercase[: len(taxonomy.operations)])


def allowed_digits(prefix: int, remaining: int, low: int, high: int) -> list[bool]:
    """Which next digits keep a zero-padded number (`prefix`, then this digit, then `remaining`
    more digits) able to land in [low, high]."""
    span = 10**remaining
    allowed = []
    for digit in range(10):
        smallest = (prefix * 10 + digit) * span
        allowed.append(smallest <= high and smallest + span - 1 >= low)
    return allowed


@dataclass(frozen=True)
class Answer:
    """The decisions of one answer, as taxonomy indices and clip frame numbers."""

    operation: int
    start_frame: int
    end_frame: int
    next_operation: int


class AnswerFormat:
    """Token ids of the fixed pieces and the choices, for one tokenizer and taxonomy."""

    def __init__(self, tokenizer, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.codes = operation_codes(taxonomy)
        self.code_ids = [self._single(tokenizer, code) for code in self.codes]
        self.digit_ids = [self._single(tokenizer, str(d)) for d in range(10)]
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        self.head = encode(HEAD)
        self.after_operation = encode(AFTER_OPERATION)
        self.between_frames = encode(BETWEEN_FRAMES)
        self.after_end = encode(AFTER_END)
        self.tail = encode(TAIL)

    @staticmethod
    def _single(tokenizer, text: str) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the tokenizer splits {text!r} into {len(ids)} tokens; need one")
        return ids[0]

    def digits_of(self, value: int) -> list[int]:
        return [self.digit_ids[int(c)] for c in f"{value:0{DIGITS}d}"]

    def answer_token_ids(self, answer: Answer) -> list[int]:
        """Every token after the prompt's HEAD, as the decoder reads them (for training)."""
        return [
            self.code_ids[answer.operation],
            *self.after_operation,
            *self.digits_of(answer.start_frame),
            *self.between_frames,
            *self.digits_of(answer.end_frame),
            *self.after_end,
            self.code_ids[answer.next_operation],
            *self.tail,
        ]

    def decision_positions(self) -> list[int]:
        """Indices in `answer_token_ids` of the tokens the decoder chooses (the rest is fed as
        fixed text, so training needs no loss there)."""
        start = 1 + len(self.after_operation)
        end = start + DIGITS + len(self.between_frames)
        following = end + DIGITS + len(self.after_end)
        return [0, *range(start, start + DIGITS), *range(end, end + DIGITS), following]

    def render(self, answer: Answer) -> str:
        """The answer as the JSON the model's tokens spell (codes kept, numbers unpadded)."""
        return json.dumps(
            {
                "dominant_operation": self.codes[answer.operation],
                "temporal_segment": {
                    "start_frame": answer.start_frame,
                    "end_frame": answer.end_frame,
                },
                "anticipated_next_operation": self.codes[answer.next_operation],
            }
        )


def code_legend(taxonomy: Taxonomy) -> str:
    """'A = Box Setup; B = Inner Packing; ...' for the prompt."""
    return "; ".join(
        f"{c} = {op}" for c, op in zip(operation_codes(taxonomy), taxonomy.operations, strict=True)
    )


def digits_value(digits: Sequence[int]) -> int:
    return int("".join(str(d) for d in digits))
