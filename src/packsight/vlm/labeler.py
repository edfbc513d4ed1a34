"""Label clips with a Qwen2-VL / Qwen2.5-VL model, in batches, with output that is always valid.

The default path decodes the answer under constraints (see decoding.py): one prefill and seven
single-token decisions per batch. The free-form path (`constrained=False`, free_form.py) is plain
`generate` plus parsing; it is the baseline the benchmark compares against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import Taxonomy
from packsight.video.framepack import EncodedFrames
from packsight.vlm.answer import AnswerFormat
from packsight.vlm.clip_input import ClipInput, check_clip, decode_clips
from packsight.vlm.decoding import HOST_MASK, Queued
from packsight.vlm.free_form import generate_free_form
from packsight.vlm.loading import Quantization, load_model_and_processor, resolve_device
from packsight.vlm.model_inputs import processor_inputs
from packsight.vlm.parsing import OutputParseError, parse_prediction
from packsight.vlm.prefill import HOST_VISION, host_vision
from packsight.vlm.speedups import Speedups, install
from packsight.vlm.streaming import stream

log = logging.getLogger(__name__)


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
        speedups: Speedups | None = None,
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
        # GPU-only speed-ups (speedups.py); each falls back to the eager path on its own.
        self.speedups = fast = (speedups or Speedups()).for_device(device)
        self.decoder, self.compiled, self.fused = install(
            model, self.answer_format, fast, constrained=constrained, device=device
        )
        # Frames are given at their final size (no resize), so each side must split into whole
        # merged patches: patch_size * merge_size pixels (28 for Qwen2-VL and Qwen2.5-VL).
        video = processor.video_processor
        self.frame_multiple = video.patch_size * video.merge_size
        self.temporal_patch = video.temporal_patch_size

    def _check(self, clip: ClipInput) -> None:
        check_clip(clip, frame_multiple=self.frame_multiple, temporal_patch=self.temporal_patch)

    def _decode(self, clips: list[ClipInput]) -> list[ClipInput | Exception]:
        return decode_clips(clips, self.device)

    def _inputs(self, clips: list[ClipInput]) -> Any:
        """The processor's output for the clips (prompt + HEAD, left padded), on the device."""
        return self._features(clips).to(self.device)

    def _prepared(self, clips: list[ClipInput]) -> Any:
        """What the decoder runs: `_inputs`, plus the prompt's M-RoPE positions made on the host,
        its mask kept there too and what the vision tower derives from the frame grid
        (`host_positions`, `fewer_syncs`, `host_vision`: see speedups.py)."""
        features, fast = self._features(clips), self.speedups
        host: dict[str, Any] = {}
        if self.constrained and fast.host_positions:
            features["position_ids"], features["rope_deltas"] = self.decoder.positions(features)
            vision = host_vision(self.model, features) if fast.host_vision else None
            if vision is not None:
                host[HOST_VISION] = vision.to(self.device)
        if self.constrained and fast.fewer_syncs:
            host[HOST_MASK] = features["attention_mask"]
        return features.to(self.device) | host

    def _features(self, clips: list[ClipInput]) -> Any:
        # Token ids, masks and grids stay on the host here; pixels are already on the device.
        if any(isinstance(clip.frames, EncodedFrames) for clip in clips):
            decoded = self._decode(clips)
            errors = [d for d in decoded if isinstance(d, Exception)]
            if errors:
                raise errors[0]
            clips = [d for d in decoded if isinstance(d, ClipInput)]  # all of them: no errors
        return processor_inputs(
            self.processor, clips, taxonomy=self.taxonomy, head=self.constrained, device=self.device
        )

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
        self,
        loaders: Sequence[Callable[[], ClipInput | Exception]],
        *,
        threads: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[ClipPrediction | OutputParseError | Exception]:
        """Predict clips that still have to be loaded (fetched, unpacked), in order: `stream`
        over a list."""
        return [
            result
            for chunk in self.stream(loaders, threads=threads, on_batch=on_batch)
            for result in chunk
        ]

    def stream(
        self,
        loaders: Iterable[Callable[[], ClipInput | Exception]],
        *,
        threads: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> Generator[list[ClipPrediction | OutputParseError | Exception]]:
        """Predict clips that still have to be loaded, a batch at a time: each list holds the
        results of the next loaders taken, in their order. `loaders` is drawn lazily, one
        batch ahead, on a helper thread that also loads and preprocesses that batch while the
        GPU works on the current one, so CPU work (and whatever produces the loaders) hides
        behind GPU work. A loader returns its clip, or the error that made it unreadable,
        which then stands in that clip's place. `on_batch` hears the size of each batch the
        model ran. See streaming.py."""
        return stream(self, loaders, threads=threads, on_batch=on_batch)

    def _shrink(self) -> None:
        if self.batch_size == 1:
            raise torch.OutOfMemoryError("CUDA out of memory with a batch of one clip")
        self.batch_size //= 2
        self.decoder.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of GPU memory: batch size lowered to %d", self.batch_size)

    def _predict_batch(self, clips: list[ClipInput]) -> list[ClipPrediction | OutputParseError]:
        return self._run(self._prepared(clips), clips)

    def _run(self, inputs: dict, clips: list[ClipInput]) -> list[ClipPrediction | OutputParseError]:
        return self._finish(self._launch(inputs, clips), clips)

    @torch.inference_mode()
    def _launch(self, inputs: dict, clips: list[ClipInput]) -> Queued | list:
        """Start the batch on the device: its answers on their way (constrained), or, for the
        free-form path, its results already."""
        counts = [clip.clip_frame_count for clip in clips]
        if not self.constrained:
            return generate_free_form(
                self.model,
                self.processor.tokenizer,
                inputs,
                counts,
                taxonomy=self.taxonomy,
                max_new_tokens=self.max_new_tokens,
                stop_token_ids=self.stop_token_ids,
                pad_token_id=self.pad_token_id,
            )
        return self.decoder.submit(inputs, counts)

    def _finish(
        self, launched: Queued | list, clips: list[ClipInput]
    ) -> list[ClipPrediction | OutputParseError]:
        """A launched batch's results, once the device has its answers."""
        if not isinstance(launched, Queued):
            return launched
        results: list[ClipPrediction | OutputParseError] = []
        counts = [clip.clip_frame_count for clip in clips]
        for decoded, count in zip(self.decoder.collect(launched), counts, strict=True):
            text = self.answer_format.render(decoded.answer)
            try:
                parsed = parse_prediction(
                    text,
                    taxonomy=self.taxonomy,
                    clip_frame_count=count,
                    confidence=decoded.confidence,
                )
            except OutputParseError as exc:  # unreachable unless the decoder has a bug
                results.append(exc)
                continue
            results.append(
                replace(
                    parsed,
                    operation_probabilities=decoded.operation_probabilities,
                    next_probabilities=decoded.next_probabilities,
                )
            )
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
    speedups: Speedups | None = None,
) -> Labeler:
    """Load the model once; `model` and `adapter` are hub ids or local folders. `speedups`
    (default: from the environment, see speedups.py) picks the GPU-only optimisations."""
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
        speedups=speedups,
    )
