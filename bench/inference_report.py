"""The inference benchmark's report: one table row per family, path and batch size, and the
system path's speed-up over the baseline of the same run."""

from __future__ import annotations

from typing import Any


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


HEADER = "| family | path | batch | clips/s | s/clip | peak GiB | unpack ms/clip | prompt tok "
ROW = (
    "| {family} | {path} | {batch} | {clips_per_s:.2f} | {s_per_clip:.4f} | {peak} | {unpack:.1f} "
    "| {prompt_tokens_per_clip:.0f} | {forwards_per_batch:.1f} | {parse_errors}/{clips} |"
)


def print_table(report: dict[str, Any]) -> None:
    env = report["env"]
    print(
        f"\n{env['gpu']} | torch {env['torch']} | transformers {env['transformers']} | "
        f"bitsandbytes {env['bitsandbytes']} | python {env['python']} | {env['date']}"
    )
    print(HEADER + "| fwd/batch | errors |\n" + "|---" * 10 + "|")
    for r in report["results"]:
        print(ROW.format(**r, peak=gib(r["peak_gib"]), unpack=1000 * r["unpack_s_per_clip"]))
    for family, ratios in report["ratios"].items():
        shown = ", ".join(f"batch {b}: {v['system_over_baseline']:.1f}x" for b, v in ratios.items())
        print(f"system/baseline {family}: {shown}")


def system_over_baseline(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and system batch size: clips/s over the baseline's of the same run."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for base in (r for r in results if r["path"] == "baseline"):
        out[base["family"]] = {
            str(r["batch"]): {
                "system_over_baseline": r["clips_per_s"] / base["clips_per_s"],
            }
            for r in results
            if r["family"] == base["family"] and r["path"] == "system"
        }
    return out
