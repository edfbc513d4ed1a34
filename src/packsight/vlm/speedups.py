"""Which GPU-only speed-ups the labeler uses: the switches, their defaults and where they apply.

- `cuda_graphs` (on by default): the seven decisions over a preallocated KV cache, captured
  once per batch shape and replayed (static_decoding.py). The same kernels as the eager
  decisions: the same answers and probabilities.
- `fused_kernels` (on by default): the vision tower's and the language model's rotary
  embeddings, activations (QuickGELU, silu(gate) * up) and RMS norms as Triton kernels that
  round exactly as the eager chain of ops does (fused.py): the same bits, fewer passes over
  memory; checked against the eager ops on the GPU at load. Where compiling is on for a part,
  the compiled code fuses that part instead.
- `compile_vision` (off by default): torch.compile of the vision tower's blocks (compiled.py).
- `compile_language` (off by default): torch.compile of the language model's RMS norms and
  silu(gate) * up in the prefill, the NF4 linears left as they are (compiled.py).
- `host_positions` (on by default, on every device): the prompt's M-RoPE positions computed
  with the next batch's preprocessing, on the host, by the model's own function
  (`LockstepDecoder.positions`), instead of inside the forward, where the GPU waits for it.
  The same integers: the same answers.
- `fewer_syncs` (on by default, on every device): no reads of GPU values in the middle of a
  batch that the host can know without them. The vision tower's segment bounds are read once
  per forward, not in each block (attention.py), and the decisions' attention masks are built
  from the host's copy of the prompt mask (static_decoding.py). Each read makes the host wait
  until the GPU has run all it was given, and the GPU then idles while the host queues more:
  38 such stalls a batch fewer, each longer on a busy host. The same integers and masks: the
  same answers.
- `host_vision` (off by default: not yet measured on a GPU; with `host_positions`): the
  prefill's remaining reads made on the host while the previous batch runs (prefill.py): what
  the vision tower derives from the frame grid (rotary positions, segment bounds and, for
  Qwen2.5-VL, the window order, whose device version reads the GPU once per clip), the check
  of the video tokens and whether any prompt token is padding. Nothing is then read from
  the GPU between a batch's start and its answers. The same values: the same answers.
- `overlap_batches` (off by default: not yet measured on a GPU): when clips stream in
  (streaming.py), the next batch is queued on the device before the current batch's answers
  are read, so the GPU does not idle while the host reads and parses them. The same batches,
  in the same order: the same answers.

The two compile switches are faster still but close to, not identical with, the eager numbers:
on the benchmark's random-weight checkpoints they changed 1-9% of the decisions (near ties),
which is why they are opt-in. The first batch of each shape pays for compiling.

Graphs, fused kernels and compiling apply on CUDA devices only, and fall back to the eager path
where they cannot run; what the host computes, and the overlap, apply everywhere. A GPU worker
takes the switches from its settings (PACKSIGHT_CUDA_GRAPHS, PACKSIGHT_FUSED_KERNELS,
PACKSIGHT_COMPILE_VISION, PACKSIGHT_COMPILE_LANGUAGE, PACKSIGHT_HOST_VISION,
PACKSIGHT_OVERLAP_BATCHES).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from packsight.vlm.answer import AnswerFormat
    from packsight.vlm.compiled import Compiled
    from packsight.vlm.decoding import LockstepDecoder
    from packsight.vlm.fused_model import Fused


@dataclass(frozen=True)
class Speedups:
    cuda_graphs: bool = True
    fused_kernels: bool = True
    compile_vision: bool = False
    compile_language: bool = False
    host_positions: bool = True
    fewer_syncs: bool = True
    host_vision: bool = False
    overlap_batches: bool = False

    @classmethod
    def none(cls) -> Speedups:
        """The eager path before any speed-up, the reference they are checked against."""
        return cls(
            cuda_graphs=False,
            fused_kernels=False,
            compile_vision=False,
            compile_language=False,
            host_positions=False,
            fewer_syncs=False,
            host_vision=False,
            overlap_batches=False,
        )

    def for_device(self, device: torch.device) -> Speedups:
        """What of this applies on `device`: off CUDA only what the host computes (CPU
        workers stay eager otherwise)."""
        if device.type == "cuda":
            return self
        return replace(
            Speedups.none(),
            host_positions=self.host_positions,
            fewer_syncs=self.fewer_syncs,
            host_vision=self.host_vision,
            overlap_batches=self.overlap_batches,
        )


def install(
    model: torch.nn.Module,
    answer_format: AnswerFormat,
    speedups: Speedups,
    *,
    constrained: bool,
    device: torch.device,
) -> tuple[LockstepDecoder, Compiled | None, Fused | None]:
    """Set `speedups` (already `for_device`) up on a loaded model: its decoder, its compiled
    pieces and its fused kernels. Compiling and fusing apply to the constrained path only (the
    free-form one is the benchmark's plain baseline); where a part is compiled, the compiled
    code fuses it instead of the kernels."""
    from packsight.vlm.attention import read_bounds_once
    from packsight.vlm.compiled import compile_model
    from packsight.vlm.decoding import LockstepDecoder
    from packsight.vlm.fused_model import fuse_model
    from packsight.vlm.static_decoding import StaticDecoder

    fast = speedups
    read_bounds_once(model, fast.fewer_syncs)
    decoder = (
        StaticDecoder(model, answer_format, graphs=True)
        if fast.cuda_graphs
        else LockstepDecoder(model, answer_format)
    )
    compiled = compile_model(
        model,
        vision=fast.compile_vision and constrained,
        language=fast.compile_language and constrained,
    )
    fuse = fast.fused_kernels and constrained
    fused = fuse_model(
        model,
        device,
        vision=fuse and not fast.compile_vision,
        language=fuse and not fast.compile_language,
    )
    return decoder, compiled, fused
