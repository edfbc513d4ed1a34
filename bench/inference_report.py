"""Formatting shared by the inference benchmark's scripts."""

from __future__ import annotations


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
