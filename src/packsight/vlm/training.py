"""QLoRA fine-tuning of the labeler's model on `TrainingExample`s, resumable after a crash.

The lean recipe from our GPU measurements (docs/benchmarks.md, "QLoRA training memory"): NF4
base, LoRA on the language model's linear layers only, non-reentrant gradient checkpointing
without peft's fp32 upcast, a frozen vision tower run without autograd, and logits computed only
where the answer is supervised. Inputs are built by the labeler itself (same chat template, HEAD
and frame handling), so training sees exactly what inference sees, and targets are
`AnswerFormat.answer_token_ids`, the tokens the decoder reads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from packsight.labels.taxonomy import Taxonomy
from packsight.training.examples import TrainingExample
from packsight.vlm.answer import Answer
from packsight.vlm.labeler import ClipInput, Labeler
from packsight.vlm.loading import compute_dtype, load_model_and_processor, resolve_device
from packsight.vlm.training_config import TrainingConfig

# Attention and MLP projections of the language model; by default the vision tower stays frozen.
LORA_TARGETS = (
    r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
)
# With `lora_vision`, the vision blocks' projections too (Qwen2-VL: attn.qkv/proj, mlp.fc1/fc2;
# Qwen2.5-VL: attn.qkv/proj, mlp.gate/up/down_proj).
VISION_LORA_TARGETS = (
    r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|gate_proj|up_proj|down_proj))"
)
IGNORE = -100
# Settings a resumed run may change; anything else would silently mix two different trainings.
RESUMABLE_CHANGES = ("epochs", "max_steps", "checkpoint_every")


@dataclass
class TrainingResult:
    adapter_dir: Path
    steps: int
    losses: list[float]  # one per optimizer step, including steps done before a resume
    resumed_from: int | None = None  # the checkpoint step this call continued from


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


def answer_loss(model, batch: TrainingBatch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Mean cross-entropy over the decided answer tokens, with full-vocabulary logits only at the
    positions that predict them (8 a row, not the whole ~50-token answer)."""
    # Rows are left padded to one length, so the supervised columns are the same in every row.
    supervised = (batch.labels != IGNORE).any(dim=0).nonzero().flatten()
    logits = model(**batch.inputs, logits_to_keep=supervised - 1, use_cache=False).logits
    targets = batch.labels[:, supervised]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def prepare_for_training(base, config: TrainingConfig):  # type: ignore[no-untyped-def]
    """The loaded (NF4) model wrapped with LoRA and set up to train in little GPU memory.

    No prepare_model_for_kbit_training: its fp32 upcast of every unquantized weight nearly doubles
    GPU memory. Checkpointing is non-reentrant, so LoRA weights get gradients without any input
    requiring grad; `enable_input_require_grads` would also hook the vision tower's patch
    embedding and drag the frozen tower into autograd."""
    from peft import LoraConfig, get_peft_model

    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=f"({LORA_TARGETS})|({VISION_LORA_TARGETS})"
        if config.lora_vision
        else LORA_TARGETS,
        modules_to_save=list(config.train_modules) or None,
        bias="none",
    )
    network = get_peft_model(base, lora)
    base.disable_input_require_grads()  # peft adds these hooks for unquantized models
    visual = base.model.visual
    if not any(p.requires_grad for p in visual.parameters()):
        # Nothing to train in the tower: run it as inference, no graph and no checkpointing.
        visual.forward = torch.no_grad()(visual.forward)
    network.train()
    return network


def micro_batch(config: TrainingConfig, examples: int, index: int) -> list[int]:
    """Example indices of micro-batch `index`: a pure function of (seed, index), so a resumed run
    sees the same data as an uninterrupted one. Epochs are reshuffled and flow into each other."""
    picks = []
    for k in range(index * config.batch_size, (index + 1) * config.batch_size):
        epoch, position = divmod(k, examples)
        order = np.random.default_rng([config.seed, epoch]).permutation(examples)
        picks.append(int(order[position]))
    return picks


def train_adapter(
    *,
    model: str,
    train: Sequence[TrainingExample],
    out_dir: Path,
    config: TrainingConfig,
    taxonomy: Taxonomy,
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    device: str = "auto",
    dtype: torch.dtype | None = None,
) -> TrainingResult:
    """Train a LoRA adapter; checkpoints go to out_dir/checkpoint, the result to out_dir/adapter."""
    if not train:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)  # LoRA's initial weights
    np.random.seed(config.seed)
    target = resolve_device(device)
    dtype = dtype or compute_dtype(target)
    base, processor = load_model_and_processor(
        model=model, adapter=None, quantization=config.quantization, device=target, dtype=dtype
    )
    network = prepare_for_training(base, config)
    precision = LossScaling(network, enabled=target.type == "cuda" and dtype == torch.float16)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    labeler = Labeler(
        model=network,
        processor=processor,
        taxonomy=taxonomy,
        device=target,
        model_version_name="training",
        batch_size=config.batch_size,
    )

    step, losses, resumed_from = 0, [], None
    checkpoint = _existing_checkpoint(out_dir)
    if resume and checkpoint is not None:
        step, losses = _load_checkpoint(checkpoint, network, optimizer, config, precision)
        resumed_from = step
    total = config.total_steps(len(train))
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(config.grad_accumulation):
            picks = micro_batch(config, len(train), step * config.grad_accumulation + micro)
            batch = training_batch(labeler, [train[i] for i in picks])
            with precision.autocast():
                loss = answer_loss(network, batch)
            precision.scaler.scale(loss / config.grad_accumulation).backward()
            step_loss += loss.item() / config.grad_accumulation
        precision.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        precision.scaler.update()
        step += 1
        losses.append(step_loss)
        if step % config.checkpoint_every == 0 or step == total:
            _save_checkpoint(out_dir, network, optimizer, config, step, losses, precision)
        if on_step is not None:
            on_step(step, step_loss)

    adapter_dir = out_dir / "adapter"
    _replace_dir(adapter_dir, lambda tmp: network.save_pretrained(tmp))
    summary = {
        "base_model": model,
        "config": asdict(config),
        "steps": step,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "resumed_from": resumed_from,
        "examples": len(train),
        "compute_dtype": str(dtype).removeprefix("torch."),
        "loss_scaling": precision.enabled,
    }
    (adapter_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainingResult(adapter_dir, step, losses, resumed_from)


class LossScaling:
    """fp16 compute (a T4 has no bf16) needs loss scaling: an fp16 backward otherwise underflows
    small gradients to zero and can overflow to inf. As in torch AMP, the trainable weights are
    kept in fp32, the forward runs under fp16 autocast and a GradScaler scales the loss and skips
    steps whose gradients overflowed. Disabled (bf16, fp32, CPU) it changes nothing."""

    def __init__(self, network, *, enabled: bool) -> None:  # type: ignore[no-untyped-def]
        self.enabled = enabled
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled)
        if enabled:
            for param in network.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()

    def autocast(self):  # type: ignore[no-untyped-def]
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.enabled)


def _replace_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder next to `final`, then swap it in with renames: a crash leaves either the old
    folder or the new one (or `final.old`, which `_existing_checkpoint` falls back to)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f"{final.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _existing_checkpoint(out_dir: Path) -> Path | None:
    for candidate in (out_dir / "checkpoint", out_dir / "checkpoint.old"):
        if (candidate / "state.json").exists():
            return candidate
    return None


def _save_checkpoint(  # type: ignore[no-untyped-def]
    out_dir: Path,
    network,
    optimizer,
    config: TrainingConfig,
    step: int,
    losses: list[float],
    precision: LossScaling,
) -> None:
    def write(tmp: Path) -> None:
        network.save_pretrained(tmp / "adapter")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if precision.enabled:
            torch.save(precision.scaler.state_dict(), tmp / "scaler.pt")
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        state = {"step": step, "losses": losses, "config": asdict(config)}
        # state.json last: its presence marks a complete checkpoint.
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    _replace_dir(out_dir / "checkpoint", write)


def _load_checkpoint(  # type: ignore[no-untyped-def]
    checkpoint: Path, network, optimizer, config: TrainingConfig, precision: LossScaling
) -> tuple[int, list[float]]:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    state = json.loads((checkpoint / "state.json").read_text())
    # Compare as stored: JSON turns tuples into lists.
    saved, wanted = state["config"], json.loads(json.dumps(asdict(config)))
    changed = [k for k in wanted if k not in RESUMABLE_CHANGES and saved.get(k) != wanted[k]]
    if changed:
        raise ValueError(
            f"checkpoint {checkpoint} was trained with other settings ({', '.join(changed)}); "
            "use resume=False or another out_dir"
        )
    device = next(p for p in network.parameters() if p.requires_grad).device
    set_peft_model_state_dict(
        network, load_peft_weights(str(checkpoint / "adapter"), device=str(device))
    )
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device))
    if precision.enabled and (checkpoint / "scaler.pt").exists():
        precision.scaler.load_state_dict(torch.load(checkpoint / "scaler.pt"))
    rng = torch.load(checkpoint / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"]), [float(x) for x in state["losses"]]
