"""The seven decisions over a preallocated KV cache, replayed as one CUDA graph per batch shape
(batch size, prompt length, which steps need a mask; the last KEPT_SHAPES of them are kept).

Eagerly, each decision is a full forward of ~1,000 small kernels whose cost is launch and
Python overhead: ~0.45 s for a batch of 64, ~0.09 s replayed (H200, Qwen2-VL-2B NF4, mask and
cache copies included). Here the prefill's KV cache is
copied into buffers with room for the answer, every per-batch input (cache, masks, position
offsets, the prefill's logits, frame counts) sits in a fixed tensor, and the decisions,
including the choices between forwards, are captured once and replayed with one launch.

The forwards run the model's own decoder layers, embedding and head, with the attention masks
built by transformers' own mask function for the lengths the eager path has at each step, so
they compute what `LockstepDecoder` computes; only the cache is a view into a larger buffer
instead of a freshly concatenated tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers.masking_utils import create_causal_mask

from packsight.vlm.answer import AnswerFormat
from packsight.vlm.decoding import HOST_MASK, LockstepDecoder, Queued
from packsight.vlm.transfer import longs, send

log = logging.getLogger(__name__)

# The frame numbers in the prompt make its length vary by a few tokens from batch to batch, so
# the decoder keeps the graphs of the last few lengths (and mask patterns) it met, over one
# shared KV buffer, instead of capturing anew whenever the length changes.
KEPT_SHAPES = 4  # each holds its graph's memory pool and a copy of the logits (~20 MB at 64)
SLACK_TOKENS = 32  # room in the shared buffer beyond the first prompt, for longer ones later


class StaticKV:
    """Per-layer key/value buffers [batch, kv heads, capacity, dim]; quacks like the parts of
    transformers' `Cache` that the text model and its mask function use."""

    is_compileable = False  # keeps the mask function's choices those of a dynamic cache
    is_sliding: ClassVar[list[bool]] = [False]

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> None:
        self.keys, self.values = keys, values
        self.length = length  # tokens held; the next update writes after them

    @classmethod
    def shaped_like(cls, cache, capacity: int) -> StaticKV:
        """Empty buffers for `capacity` tokens, shaped like `cache` (a DynamicCache)."""
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for layer in cache.layers:
            for source, into in ((layer.keys, keys), (layer.values, values)):
                batch, heads, _, dim = source.shape
                into.append(source.new_empty(batch, heads, capacity, dim))
        return cls(keys, values, 0)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def sized(self, length: int, extra: int) -> StaticKV:
        """Views of the first `length + extra` positions, for a prompt of `length` tokens."""
        end = length + extra
        keys = [key[:, :, :end] for key in self.keys]
        return StaticKV(keys, [value[:, :, :end] for value in self.values], length)

    def load(self, cache) -> None:
        """Copy a prefill's cache of the same shape into the buffers' first positions."""
        for layer, key, value in zip(cache.layers, self.keys, self.values, strict=True):
            key[:, :, : layer.keys.shape[2]].copy_(layer.keys)
            value[:, :, : layer.values.shape[2]].copy_(layer.values)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *_):
        end = self.length + key_states.shape[2]
        key, value = self.keys[layer_idx], self.values[layer_idx]
        key[:, :, self.length : end].copy_(key_states)
        value[:, :, self.length : end].copy_(value_states)
        return key[:, :, :end], value[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.length + query_length, 0


@dataclass
class _Shape:
    """One prompt length's and mask pattern's fixed inputs, and its graph once captured."""

    kv: StaticKV
    length: int
    full_mask: torch.Tensor
    deltas: torch.Tensor
    logits: torch.Tensor
    last: torch.Tensor
    masks: list[torch.Tensor | None]
    graph: torch.cuda.CUDAGraph | None = None
    outputs: tuple[torch.Tensor, ...] = ()

    def load(self, **given: torch.Tensor) -> None:
        for name, value in given.items():
            getattr(self, name).copy_(value)


class StaticDecoder(LockstepDecoder):
    """`LockstepDecoder` over a `StaticKV`; with `graphs`, captured on the first batch of each
    shape and replayed after. Falls back to the eager decoder for what it cannot run."""

    def __init__(self, model, answer_format: AnswerFormat, *, graphs: bool) -> None:
        super().__init__(model, answer_format)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._text = base.model.language_model
        self._head = base.lm_head
        config = self._text.config
        # Sliding-window layers would need their own masks: leave those models eager.
        self.supported = set(getattr(config, "layer_types", ["full_attention"])) == {
            "full_attention"
        }
        self.graphs = graphs
        self._storage: StaticKV | None = None  # the shared buffers, for one batch size
        self._shapes: dict[tuple, _Shape] = {}  # by (length, mask pattern), oldest use first
        self.kv: StaticKV | None = None  # the running shape's, and its inputs below
        self._masks: list[torch.Tensor | None] = []
        self._full_mask = self._deltas = self._logits = self._last = torch.empty(0)
        self._prefill_length = 0
        self.captures = 0  # graphs captured so far (each costs one eager run's time)
        self._eager = False  # this batch's decisions run on the dynamic cache
        self._capture_stream: torch.cuda.Stream | None = None

    def reset(self) -> None:
        super().reset()
        self._storage, self.kv, self._masks = None, None, []
        self._shapes.clear()

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        if self._eager:
            return super()._forward(chunk)
        assert self.kv is not None
        step, length = self._step, chunk.shape[1]
        end = self.kv.length + length
        # The same positions as the eager path computes from its growing mask.
        text = (self._full_mask[:, :end].long().cumsum(-1) - 1)[:, -length:]
        positions = (text + self._deltas).unsqueeze(0).expand(3, -1, -1)
        out = self._text(
            input_ids=chunk,
            attention_mask={"full_attention": self._masks[step]},
            position_ids=positions,
            past_key_values=self.kv,
            use_cache=True,
        )
        self.kv.length = end
        self._step += 1
        return self._head(out.last_hidden_state[:, -1:])[:, -1]

    def _step_masks(
        self, prefill_mask: torch.Tensor, dtype: torch.dtype, device: torch.device
    ) -> list:
        """Each forward's 4D mask as transformers builds it for the eager path at that step
        (None where it lets SDPA skip the mask). Built from `prefill_mask` where it is, so
        from a host copy without reading the GPU (transformers asks whether any token is
        padding), then sent to `device` without waiting for it."""
        batch, length = prefill_mask.shape
        full = torch.cat([prefill_mask, prefill_mask.new_ones(batch, sum(self.chunk_lengths()))], 1)
        masks, seen = [], length
        for chunk in self.chunk_lengths():
            probe = StaticKV([], [], seen)
            mask = create_causal_mask(
                config=self._text.config,
                inputs_embeds=torch.empty(batch, chunk, 1, dtype=dtype, device=full.device),
                attention_mask=full[:, : seen + chunk],
                past_key_values=probe,  # type: ignore[arg-type]  # the sizes are all it reads
                position_ids=None,
            )
            # Own, contiguous copies: the graph reads them from fixed addresses.
            if mask is not None and not isinstance(mask, torch.Tensor):
                raise TypeError(f"unexpected mask type {type(mask).__name__} for SDPA")
            masks.append(None if mask is None else self._own(mask, device))
            seen += chunk
        return masks

    @staticmethod
    def _own(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A contiguous copy of `mask` on `device`. From the host through pinned memory: a
        copy from pageable memory would wait for the GPU's queue to drain."""
        if mask.device == device:
            return mask.contiguous().clone()
        return send(mask.contiguous(), device)

    def _run_answer(self) -> tuple[torch.Tensor, ...]:
        assert self.kv is not None
        self.kv.length, self._step = self._prefill_length, 0
        return self._answer(self._logits, self._last)

    @torch.inference_mode()
    def submit(self, inputs: dict, frame_counts: list[int]) -> Queued:
        if not self.supported:
            return super().submit(inputs, frame_counts)
        device = inputs["attention_mask"].device
        self._constants(device)
        last = longs(frame_counts, device) - 1
        logits = self._prefill(inputs)
        prefill_mask = inputs["attention_mask"]
        batch, length = prefill_mask.shape
        captured = any(shape.graph is not None for shape in self._shapes.values())
        if captured and self._storage is not None and batch < self._storage.keys[0].shape[0]:
            # A batch smaller than the captured ones (a task's last, partial batch) is decided
            # eagerly and the full batches' graphs stay: capturing anew for each partial batch
            # and again for the next full one would cost more than the replays save.
            return self._decide_eagerly(logits, last)
        cache, self.cache = self.cache, None
        extra = sum(self.chunk_lengths())
        storage = self._storage
        if (
            storage is None
            or storage.keys[0].shape[0] != batch
            or length + extra > storage.capacity
        ):
            self.reset()  # drop the buffers and graphs of another batch size first
            storage = self._storage = StaticKV.shaped_like(cache, length + extra + SLACK_TOKENS)
        masks = self._step_masks(inputs.get(HOST_MASK, prefill_mask), logits.dtype, device)
        key = (length, tuple(mask is None for mask in masks))
        full_mask = torch.cat([prefill_mask, prefill_mask.new_ones(batch, extra)], dim=1)
        shape = self._shapes.pop(key, None)
        if shape is None:
            if len(self._shapes) >= KEPT_SHAPES:
                del self._shapes[next(iter(self._shapes))]  # the least recently used
            kv = storage.sized(length, extra)
            shape = _Shape(kv, length, full_mask, self.deltas.clone(), logits.clone(), last, masks)
        else:
            shape.load(full_mask=full_mask, deltas=self.deltas, logits=logits, last=last)
            for into, mask in zip(shape.masks, masks, strict=True):
                if into is not None and mask is not None:
                    into.copy_(mask)
        self._shapes[key] = shape
        shape.kv.load(cache)
        del cache
        self.kv, self._prefill_length, self._masks = shape.kv, length, shape.masks
        self._full_mask, self._deltas = shape.full_mask, shape.deltas
        self._logits, self._last = shape.logits, shape.last
        if shape.graph is not None:
            shape.graph.replay()
            rows, evidence = shape.outputs
            return Queued.of(rows, evidence)
        queued = Queued.of(*self._run_answer())  # copied out before the capture's runs
        if self.graphs and device.type == "cuda":
            self._capture(shape)
        return queued

    def _decide_eagerly(self, logits: torch.Tensor, last: torch.Tensor) -> Queued:
        self._eager = True
        try:
            rows, evidence = super()._answer(logits, last)
        finally:
            self._eager, self.cache = False, None
        return Queued.of(rows, evidence)

    def _capture(self, shape: _Shape) -> None:
        """Capture the decisions for replay on later batches of this shape. A failure only
        costs the speed-up: the decoder stays eager from then on."""
        # One stream for every capture, of high priority: CUDA streams come from pools of 32
        # per priority, and a capture must not share its stream with the helper thread's
        # preparing stream or the JPEG decoder's (both of normal priority), whose work would
        # otherwise be captured.
        if self._capture_stream is None:
            self._capture_stream = torch.cuda.Stream(priority=-1)
        stream = self._capture_stream
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(stream):
                self._run_answer()  # warm-up on the capture stream (cuBLAS workspaces)
            # thread_local: the labeler's helper thread keeps decoding JPEGs meanwhile.
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                outputs = self._run_answer()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # an op that cannot be captured: keep the eager decisions
            log.warning("CUDA graph capture of the decisions failed, staying eager: %s", exc)
            self.graphs = False
            return
        finally:
            torch.cuda.current_stream().wait_stream(stream)
        shape.graph, shape.outputs = graph, outputs
        self.captures += 1
        log.info(
            "decisions captured as a CUDA graph: batch %d, prompt %d tokens (%d graphs kept)",
            shape.full_mask.shape[0],
            shape.length,
            len(self._shapes),
        )
