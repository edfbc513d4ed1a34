"""The table `cpu_stage.py` prints: one row per run, every phase's share of a clip."""

from __future__ import annotations

from typing import Any

PHASES = ("download", "motion", "decode", "pack", "write")

COLUMNS = (  # (heading, the result's value as printed)
    ("sampler", lambda r: r["sampler"]),
    ("decode", lambda r: r.get("decode", "two-pass")),
    ("decord threads", lambda r: r["decord_threads"]),
    ("processes", lambda r: r["processes"]),
    ("clips/s", lambda r: f"{r['clips_per_s']:.2f}"),
    ("× first", lambda r: f"{r['ratio_to_first_variant']:.2f}"),
    ("videos/s", lambda r: f"{r['videos_per_s']:.3f}"),
    ("clips/s/core", lambda r: f"{r['clips_per_s_per_core']:.2f}"),
    ("CPU s/clip", lambda r: f"{r['cpu_s_per_clip']:.3f}"),
    ("CPU use", lambda r: f"{100 * r['cpu_utilisation']:.0f}%"),
    *((f"ms/clip: {p}", lambda r, p=p: f"{1000 * r['phase_s_per_clip'][p]:.1f}") for p in PHASES),
)


def print_table(report: dict[str, Any]) -> None:
    env, video = report["env"], report["video"]
    print(
        f"\n{env['cpu']} | {env['usable_cores']} usable cores | python {env['python']} | "
        f"decord {env['decord']} | av {env['av']} | numpy {env['numpy']} | {env['date']}"
    )
    print(
        f"videos: {video['width']}x{video['height']} @ {video['fps']:g} fps, {video['seconds']:.1f}"
        f" s, {video['mbit_per_s']:.2f} Mbit/s, {video['clips']} clips each, {video['pack_kb']:.0f}"
        f" kB per pack; storage {report['storage']}"
    )
    print("| " + " | ".join(h for h, _ in COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|")
    for r in report["results"]:
        print("| " + " | ".join(str(cell(r)) for _, cell in COLUMNS) + " |")
