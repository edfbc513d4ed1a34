"""Label clips with a Qwen2-VL / Qwen2.5-VL model, in batches, with output that is always valid.

The default path decodes the answer under constraints (see decoding.py): one prefill and seven
single-token decisions per batch. The free-form path (`constrained=False`) is plain `generate`
plus parsing; it is the baseline the benchmark compares against.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.video_utils import VideoMetadata

from packsight.labels.taxonomy import Taxonomy
from packsight.video.framepack import EncodedFrames
from packsight.vlm.answer import DIGITS, HEAD, AnswerFormat
from packsight.vlm.decoding import LockstepDecoder
from packsight.vlm.loading import Quantization, load_model_and_processor, resolve_device
from packsight.vlm.parsing import ClipPrediction, OutputParseError, parse_prediction
from packsight.vlm.prompts import build_messages

log = logging.getLogger(__name__)


@dataclass
class ClipInput:
    # uint8 [n, h, w, 3] (n even, 8 by default; h and w multiples of 28), or still JPEG-encoded
    # frames, which the labeler decodes on its own device in one call per batch.
    frames: np.ndarray | torch.Tensor | EncodedFrames
    clip_frame_count: int  # frames in the clip window, e.g. 125 for 5 s at 25 fps
    frame_indices: tuple[int, ...]  # positions of the sampled frames within the clip
    # Qwen2.5-VL places frames in absolute time; the sampled frame rate is derived from this.
    fps: float = 25.0


class _ChosenTokenRecorder(LogitsProcessor):
    """Unconstrained mode: the probability of each greedy choice, per row and step."""

    def __init__(self, batch: int) -> None:
        self.log_probs: list[list[float]] = [[] for _ in range(batch)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values.cpu().tolist()
        for row, value in enumerate(best):
            self.log_probs[row].append(value)
        return scores


class Labeler:
    """A loaded model that turns clips into `ClipPrediction`s (or per-clip parse errors)."""

    def __init__(
        self,
        *,
        model,
        processor,
        taxonomy: Taxonomy,
        device: torch.device,
        model_version_name: str,
        max_new_tokens: int = 96,
        constrained: bool = True,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.model = model
        self.processor = processor
        self.taxonomy = taxonomy
        self.device = device
        self.model_version_name = model_version_name
        self.max_new_tokens = max_new_tokens
        self.constrained = constrained
        tokenizer = processor.tokenizer
        # Answers end with <|im_end|> (end of turn); free generation may also stop
        # at the checkpoint's own end tokens (Qwen lists <|endoftext|> too).
        self.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        self.stop_token_ids = [self.eos_token_id] + [
            t for t in configured if t is not None and t != self.eos_token_id
        ]
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.answer_format = AnswerFormat(tokenizer, taxonomy)
        self.decoder = LockstepDecoder(model, self.answer_format)
        # Frames are given at their final size (no resize), so each side must split into whole
        # merged patches: patch_size * merge_size pixels (28 for Qwen2-VL and Qwen2.5-VL).
        video = processor.video_processor
        self.frame_multiple = video.patch_size * video.merge_size
        self.temporal_patch = video.temporal_patch_size

    def _check(self, clip: ClipInput) -> None:
        frames = clip.frames
        if isinstance(frames, EncodedFrames):
            n, h, w = len(frames.jpegs), frames.height, frames.width
        else:
            uint8 = torch.uint8 if isinstance(frames, torch.Tensor) else np.uint8
            if frames.dtype != uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"frames must be uint8 [n, h, w, 3], got {frames.dtype} {tuple(frames.shape)}"
                )
            n, h, w, _ = frames.shape
        if n == 0 or n % self.temporal_patch:
            raise ValueError(
                f"the frame count must be a positive multiple of {self.temporal_patch}, got {n}"
            )
        if h % self.frame_multiple or w % self.frame_multiple:
            raise ValueError(
                f"frame size {h}x{w} is not a multiple of {self.frame_multiple} per side"
            )
        if len(clip.frame_indices) != n:
            raise ValueError(f"{n} frames but {len(clip.frame_indices)} frame_indices")
        if not 1 <= clip.clip_frame_count <= 10**DIGITS:
            raise ValueError(
                f"clip of {clip.clip_frame_count} frames: frame numbers must fit {DIGITS} digits"
            )

    def _decode(self, clips: list[ClipInput]) -> list[ClipInput | Exception]:
        """Decode JPEG-encoded frames on the model's device (nvJPEG on a GPU), all clips in one
        call; a clip whose JPEGs are damaged comes back as its error."""
        from torchvision.io import ImageReadMode, decode_jpeg

        def decode(group: list[ClipInput]) -> list[ClipInput]:
            data = [
                torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
                for clip in group
                for jpeg in clip.frames.jpegs
            ]
            images = iter(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            out = []
            for clip in group:
                frames = torch.stack([next(images) for _ in clip.frames.jpegs]).permute(0, 2, 3, 1)
                if tuple(frames.shape[1:3]) != (clip.frames.height, clip.frames.width):
                    raise ValueError(
                        f"decoded frames are {tuple(frames.shape)}, pack says otherwise"
                    )
                out.append(replace(clip, frames=frames))
            return out

        encoded = [c for c in clips if isinstance(c.frames, EncodedFrames)]
        if not encoded:
            return list(clips)
        try:
            decoded = iter(decode(encoded))
            return [next(decoded) if isinstance(c.frames, EncodedFrames) else c for c in clips]
        except (RuntimeError, ValueError):
            pass  # find the damaged clip(s): decode one by one
        results: list[ClipInput | Exception] = []
        for clip in clips:
            try:
                results.append(
                    decode([clip])[0] if isinstance(clip.frames, EncodedFrames) else clip
                )
            except (RuntimeError, ValueError) as exc:
                results.append(ValueError(f"damaged JPEG frames: {exc}"))
        return results

    def _inputs(self, clips: list[ClipInput]):
        if any(isinstance(clip.frames, EncodedFrames) for clip in clips):
            decoded = self._decode(clips)
            errors = [d for d in decoded if isinstance(d, Exception)]
            if errors:
                raise errors[0]
            clips = decoded  # type: ignore[assignment]
        texts = [
            self.processor.apply_chat_template(
                build_messages(
                    taxonomy=self.taxonomy,
                    clip_frame_count=clip.clip_frame_count,
                    frame_indices=clip.frame_indices,
                ),
                tokenize=False,
                add_generation_prompt=True,
            )
            # The constrained answer starts with fixed text; it is part of the prefill.
            + (HEAD if self.constrained else "")
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
        return self.processor(
            text=texts,
            videos=[clip.frames for clip in clips],
            video_metadata=metadata,
            # Rescale, normalise and patchify on the model's device: on the CPU this costs as
            # much as the GPU's whole forward pass for a batch of clips.
            device=str(self.device),
            do_sample_frames=False,  # the clip's frames are already the sampled ones
            do_resize=False,
            cap_pixels_per_frame=False,
            padding=True,
            padding_side="left",  # generation appends on the right of every row
            return_tensors="pt",
        ).to(self.device)

    def predict(self, clips: list[ClipInput]) -> list[ClipPrediction | OutputParseError]:
        """One prediction, or the reason there is none, per clip, in order.

        Clips run `batch_size` at a time. When the GPU runs out of memory the batch size is
        halved for good and the same clips are tried again, so none is lost or repeated; only
        a single clip that does not fit raises."""
        for clip in clips:
            self._check(clip)
        results: list[ClipPrediction | OutputParseError] = []
        while len(results) < len(clips):
            batch = clips[len(results) : len(results) + self.batch_size]
            try:
                results += self._predict_batch(batch)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self._shrink()
        return results

    def predict_stream(
        self, loaders: Sequence[Callable[[], ClipInput | Exception]], *, threads: int = 8
    ) -> list[ClipPrediction | OutputParseError | Exception]:
        """Predict clips that still have to be loaded (fetched, unpacked). The next batch is
        loaded and preprocessed on a helper thread while the GPU works on the current one, so
        CPU work hides behind GPU work. A loader returns its clip, or the error that made it
        unreadable, which then stands in that clip's place."""
        results: list[ClipPrediction | OutputParseError | Exception | None] = [None] * len(loaders)

        def prepare(start: int, size: int):  # type: ignore[no-untyped-def]
            with ThreadPoolExecutor(max_workers=threads) as pool:
                loaded = list(pool.map(lambda load: load(), loaders[start : start + size]))
            good = []
            for index, clip in enumerate(loaded, start):
                if isinstance(clip, Exception):
                    results[index] = clip
                    continue
                try:
                    self._check(clip)
                except ValueError as exc:  # frames of an unusable shape: that clip's error
                    results[index] = exc
                    continue
                good.append((index, clip))
            decoded = self._decode([clip for _, clip in good])
            for (index, _), clip in zip(list(good), decoded, strict=True):
                if isinstance(clip, Exception):
                    results[index] = clip
            good = [
                (i, c) for (i, _), c in zip(good, decoded, strict=True) if isinstance(c, ClipInput)
            ]
            inputs = self._inputs([clip for _, clip in good]) if good else None
            return good, inputs

        with ThreadPoolExecutor(max_workers=1) as helper:
            start, size = 0, self.batch_size
            pending = helper.submit(prepare, start, size) if loaders else None
            while pending is not None:
                good, inputs = pending.result()
                start += size
                size = self.batch_size
                pending = helper.submit(prepare, start, size) if start < len(loaders) else None
                if not good:
                    continue
                try:
                    predictions = self._run(inputs, [clip for _, clip in good])
                except torch.OutOfMemoryError:
                    self._shrink()
                    predictions = self.predict([clip for _, clip in good])
                for (index, _), prediction in zip(good, predictions, strict=True):
                    results[index] = prediction
        return results  # type: ignore[return-value]

    def _shrink(self) -> None:
        if self.batch_size == 1:
            raise torch.OutOfMemoryError("CUDA out of memory with a batch of one clip")
        self.batch_size //= 2
        self.decoder.cache = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of GPU memory: batch size lowered to %d", self.batch_size)

    def _predict_batch(self, clips: list[ClipInput]) -> list[ClipPrediction | OutputParseError]:
        return self._run(self._inputs(clips), clips)

    @torch.inference_mode()
    def _run(self, inputs: dict, clips: list[ClipInput]) -> list[ClipPrediction | OutputParseError]:
        counts = [clip.clip_frame_count for clip in clips]
        if not self.constrained:
            return self._generate_free_form(inputs, counts)
        results: list[ClipPrediction | OutputParseError] = []
        for (answer, confidence), count in zip(
            self.decoder.decode(inputs, counts), counts, strict=True
        ):
            text = self.answer_format.render(answer)
            try:
                results.append(
                    parse_prediction(
                        text, taxonomy=self.taxonomy, clip_frame_count=count, confidence=confidence
                    )
                )
            except OutputParseError as exc:  # unreachable unless the decoder has a bug
                results.append(exc)
        return results

    def _generate_free_form(
        self, inputs, counts: list[int]
    ) -> list[ClipPrediction | OutputParseError]:  # type: ignore[no-untyped-def]
        prompt_length = inputs["input_ids"].shape[1]
        recorder = _ChosenTokenRecorder(len(counts))
        sequences = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            # A repetition penalty (Qwen2.5-VL's config ships 1.05) would distort confidences.
            repetition_penalty=1.0,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            logits_processor=LogitsProcessorList([recorder]),
        )
        results: list[ClipPrediction | OutputParseError] = []
        for row, tokens in enumerate(sequences[:, prompt_length:].tolist()):
            stops = [i for i, t in enumerate(tokens) if t in self.stop_token_ids]
            if stops:
                tokens = tokens[: stops[0] + 1]
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
            # No reliable token span for the operation here: the geometric mean of the chosen
            # tokens' probabilities stands in for a confidence.
            steps = recorder.log_probs[row][: len(tokens)]
            confidence = math.exp(sum(steps) / len(steps)) if steps else 0.0
            try:
                results.append(
                    parse_prediction(
                        text,
                        taxonomy=self.taxonomy,
                        clip_frame_count=counts[row],
                        confidence=confidence,
                    )
                )
            except OutputParseError as exc:
                results.append(exc)
        return results


def load_labeler(
    *,
    model: str,
    adapter: str | None,
    quantization: Quantization,
    device: str = "auto",
    taxonomy: Taxonomy,
    max_new_tokens: int = 96,
    constrained: bool = True,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
) -> Labeler:
    """Load the model once; `model` and `adapter` are hub ids or local folders."""
    target = resolve_device(device)
    network, processor = load_model_and_processor(
        model=model, adapter=adapter, quantization=quantization, device=target, dtype=dtype
    )
    return Labeler(
        model=network,
        processor=processor,
        taxonomy=taxonomy,
        device=target,
        model_version_name=f"{model}@{adapter or 'base'}:{quantization}",
        max_new_tokens=max_new_tokens,
        constrained=constrained,
        batch_size=batch_size,
    )
