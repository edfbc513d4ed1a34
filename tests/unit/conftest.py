"""Fixtures of the labeler tests: tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints, built once
a session, and a labeler loaded from the Qwen2-VL one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from packsight.vlm.labeler import Labeler


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # Imported here: the other unit tests do not pay for loading torch and transformers.
    from packsight.vlm.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_model(root / f, family=f) for f in ("qwen2_vl", "qwen2_5_vl")}


@pytest.fixture(scope="module")
def labeler(tiny_models: dict[str, Path]) -> Labeler:
    from labeler_clips import TAXONOMY

    from packsight.vlm.labeler import load_labeler

    return load_labeler(
        model=str(tiny_models["qwen2_vl"]), adapter=None, quantization="none", taxonomy=TAXONOMY
    )
