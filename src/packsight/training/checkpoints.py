"""Training checkpoints on local disk: the adapter, optimizer, loss-scaler and RNG state of a
step, swapped in with renames so that a crash leaves a complete checkpoint behind."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from packsight.training.config import TrainingConfig
from packsight.training.loss_scaling import LossScaling

# Settings a resumed run may change; anything else would silently mix two different trainings.
RESUMABLE_CHANGES = ("epochs", "max_steps", "checkpoint_every")


def replace_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder next to `final`, then swap it in with renames: a crash leaves either the old
    folder or the new one (or `final.old`, which `existing_checkpoint` falls back to)."""
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


def existing_checkpoint(out_dir: Path) -> Path | None:
    for candidate in (out_dir / "checkpoint", out_dir / "checkpoint.old"):
        if (candidate / "state.json").exists():
            return candidate
    return None


def save_checkpoint(
    out_dir: Path,
    network: Any,
    optimizer: torch.optim.Optimizer,
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

    replace_dir(out_dir / "checkpoint", write)


def load_checkpoint(
    checkpoint: Path,
    network: Any,
    optimizer: torch.optim.Optimizer,
    config: TrainingConfig,
    precision: LossScaling,
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
