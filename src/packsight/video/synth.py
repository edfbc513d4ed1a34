"""A synthetic packing archive: H.264 videos with OpenPack-style operation annotations.

Stands in for the real archive (whose RGB video cannot be downloaded here) in tests, demos and
smoke training. Each operation has its own look (box colour, shape, stripes) and its own hand motion
(path and speed), so a model can learn the classes and the motion signal changes at boundaries.
"""

from __future__ import annotations

import colorsys
import csv
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from packsight.labels.taxonomy import Taxonomy, load_taxonomy

CSV_COLUMNS = ("uuid", "user", "session", "box", "id", "operation", "start", "end", "actions")
JST = timezone(timedelta(hours=9))  # OpenPack was recorded in Japan; its timestamps carry +09:00
SESSION_EPOCH = datetime(2021, 10, 14, 9, 0, tzinfo=JST)
Layout = Literal["packsight", "openpack"]
IDLE_CHANCE = 0.2  # after each operation, the chance that the worker pauses (background) first
OPERATION_SECONDS = (2.0, 8.0)
NOISE_SIGMA = 2.0  # grey levels; x264 time grows fast with noise
# ultrafast: ~3x quicker than veryfast on noisy frames (no B-frames/CABAC); size hardly matters.
X264_OPTIONS = {"preset": "ultrafast", "crf": "23"}


@dataclass
class SyntheticVideo:
    key: str  # path relative to the archive root, '/'-separated (an object-store key)
    user: str
    session: str
    path: Path
    fps: int
    frame_count: int
    segments: list[tuple[str, int, int]]  # (operation, start_frame, end_frame), half-open


def write_synthetic_archive(
    out_dir: Path,
    *,
    videos: int,
    seed: int = 42,
    taxonomy: Taxonomy | None = None,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    min_seconds: float = 12,
    max_seconds: float = 30,
    layout: Layout = "packsight",
    preset: str = X264_OPTIONS["preset"],
) -> list[SyntheticVideo]:
    """Write `videos` sessions under out_dir; deterministic for a seed.

    Layout "packsight": `<user>/video/<user>_<session>.mp4` plus a manifest.json of every
    session. Layout "openpack", as OpenPack lays out its archive: `<user>/kinect/<session>.mp4`
    with a sidecar `<session>.json` (`{"start": ISO-8601, "fps": ...}`) beside each video, and
    no manifest. Annotations are `<user>/annotation/openpack-operations/<session>.csv` in both.
    Video i depends only on (seed, i), so a larger archive extends a smaller one unchanged.
    `preset`: x264's (a slower one adds B-frames and CABAC, closer to a camera's encoding).
    """
    if layout not in ("packsight", "openpack"):
        raise ValueError(f"layout must be 'packsight' or 'openpack', got {layout!r}")
    taxonomy = taxonomy or load_taxonomy("assignment")
    width, height = size
    if videos < 0 or fps <= 0 or width % 2 or height % 2 or min(size) < 32:
        raise ValueError(f"need videos >= 0, fps > 0 and an even size >= 32 px, got {size}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    out_dir = Path(out_dir)
    written, manifest = [], []
    for i in range(videos):
        rng = np.random.default_rng([seed, i])
        user, session = f"U01{1 + i % 8:02d}", f"S{100 + i:04d}"
        total = max(1, round(rng.uniform(min_seconds, max_seconds) * fps))
        plan = _plan_session(rng, taxonomy, fps, total)
        start = SESSION_EPOCH + timedelta(
            days=i // 8, hours=i % 8, milliseconds=int(rng.integers(3_600_000))
        )
        if layout == "openpack":
            key = f"{user}/kinect/{session}.mp4"
            sidecar = {"start": _iso(start), "fps": fps}
            (out_dir / key).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / key).with_suffix(".json").write_text(json.dumps(sidecar) + "\n")
        else:
            key = f"{user}/video/{user}_{session}.mp4"
        # Own streams for pixels and uuids: changing the renderer must not change the annotations.
        rng = np.random.default_rng([seed, i, 1])
        _write_video(out_dir / key, rng, taxonomy, plan, fps, size, preset)
        csv_path = out_dir / user / "annotation" / "openpack-operations" / f"{session}.csv"
        uuids = np.random.default_rng([seed, i, 2])
        _write_annotation(csv_path, uuids, taxonomy, user, session, plan, start, fps)
        segments = [(op, s, e) for op, s, e, _ in plan]
        written.append(SyntheticVideo(key, user, session, out_dir / key, fps, total, segments))
        manifest.append(
            {
                "key": key,
                "user": user,
                "session": session,
                "fps": fps,
                "frame_count": total,
                "width": width,
                "height": height,
                "video_start": _iso(start),
                "segments": [
                    {"operation": o, "start_frame": s, "end_frame": e} for o, s, e in segments
                ],
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if layout == "packsight":
        summary = {"seed": seed, "taxonomy": taxonomy.name, "videos": manifest}
        (out_dir / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return written


def _plan_session(
    rng: np.random.Generator, taxonomy: Taxonomy, fps: int, total: int
) -> list[tuple[str, int, int, int]]:
    """(operation, start_frame, end_frame, box) segments tiling [0, total).

    Boxes go through the procedure in order, with an occasional pause (background) in between.
    """
    special = (taxonomy.background, taxonomy.unknown)
    steps = taxonomy.procedure or tuple(op for op in taxonomy.operations if op not in special)
    plan: list[tuple[str, int, int, int]] = []

    def add(op: str, box: int) -> None:
        start = plan[-1][2] if plan else 0
        plan.append((op, start, start + _duration(rng, fps), box))

    if rng.random() < 0.3:  # some sessions open with the worker not yet busy
        add(taxonomy.background, 0)
    # A session is an excerpt of a stream of boxes: start anywhere in the procedure, or the late
    # steps (Label, Final Check) would hardly ever appear in a 12-30 s video.
    step = int(rng.integers(len(steps)))
    while not plan or plan[-1][2] < total:
        add(steps[step % len(steps)], box=1 + step // len(steps))
        step += 1
        if plan[-1][2] < total and rng.random() < IDLE_CHANCE:
            add(taxonomy.background, plan[-1][3])
    # The recording stops mid-operation, as real ones do: clip the last segment.
    return [(op, s, min(e, total), box) for op, s, e, box in plan if s < total]


def _duration(rng: np.random.Generator, fps: int) -> int:
    return max(1, round(rng.uniform(*OPERATION_SECONDS) * fps))


def _iso(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="microseconds")  # 2021-10-14 11:25:35.437000+09:00


def _write_annotation(
    path: Path,
    rng: np.random.Generator,
    taxonomy: Taxonomy,
    user: str,
    session: str,
    plan: list[tuple[str, int, int, int]],
    video_start: datetime,
    fps: int,
) -> None:
    """OpenPack's CSV: one row per operation; background time has no row (it is 'not covered')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for op, start, end, box in plan:
            if op == taxonomy.background:
                continue
            row_id = taxonomy.ids.get(op, taxonomy.index(op) * 100 + 100)
            row_uuid = uuid.UUID(bytes=rng.bytes(16), version=4)
            at = [
                video_start + timedelta(microseconds=round(f * 1_000_000 / fps))
                for f in (start, end)
            ]
            writer.writerow(
                [row_uuid, user, session, box, row_id, op, _iso(at[0]), _iso(at[1]), ""]
            )


def _write_video(
    path: Path,
    rng: np.random.Generator,
    taxonomy: Taxonomy,
    plan: list[tuple[str, int, int, int]],
    fps: int,
    size: tuple[int, int],
    preset: str,
) -> None:
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = _Scene(rng, taxonomy, width, height)
    with av.open(str(path), "w") as container:
        options = X264_OPTIONS | {"preset": preset}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 2 * fps  # short GOPs keep get_batch's seeks cheap
        stream.codec_context.time_base = Fraction(1, fps)
        for op, start, end, _ in plan:
            for frame_index in range(start, end):
                image = scene.render(op, (frame_index - start) / fps)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = frame_index
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


class _Scene:
    """A top-down workbench: a box whose look names the operation and a hand blob moving over it."""

    def __init__(
        self, rng: np.random.Generator, taxonomy: Taxonomy, width: int, height: int
    ) -> None:
        self.taxonomy, self.width, self.height = taxonomy, width, height
        self.rng = rng
        ys, xs = np.mgrid[0:height, 0:width]
        wood = 150 + 20 * np.sin(xs / width * 9 + ys / height * 3) + rng.uniform(-10, 10)
        table = np.stack([wood, wood * 0.8, wood * 0.6], axis=-1)
        # Sensor noise on the table, from a few stored variants picked at random: the frames never
        # repeat exactly, without paying for fresh noise (or its encoding) on every pixel.
        noise = rng.normal(0, NOISE_SIGMA, (6, height, width, 1))
        self.tables = (table + noise).round().clip(0, 255).astype(np.uint8)
        self.hand_radius = max(3, height // 14)

    def render(self, operation: str, seconds: float) -> np.ndarray:
        image = self.tables[self.rng.integers(len(self.tables))].copy()
        index = self.taxonomy.index(operation)
        idle = operation in (self.taxonomy.background, self.taxonomy.unknown)
        if not idle:
            self._draw_box(image, index)
        self._draw_hand(image, index, seconds, idle)
        return image

    def _box_rect(self, index: int) -> tuple[int, int, int, int]:
        box_w = self.width * (0.30 + 0.08 * (index % 3))
        box_h = self.height * (0.28 + 0.10 * (index // 3 % 3))
        x0, y0 = (self.width - box_w) / 2, (self.height - box_h) / 2
        return round(x0), round(y0), round(x0 + box_w), round(y0 + box_h)

    def _draw_box(self, image: np.ndarray, index: int) -> None:
        x0, y0, x1, y1 = self._box_rect(index)
        # Golden-ratio hue steps: neighbours in the operation list get very different colours.
        rgb = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 0.9)
        image[y0:y1, x0:x1] = [round(c * 255) for c in rgb]
        stripes = index % 4  # 0-3 dark bands across the box: tape, wrap, label...
        for k in range(stripes):
            top = y0 + (k + 1) * (y1 - y0) // (stripes + 1)
            image[top - 2 : top + 2, x0:x1] = 40

    def _draw_hand(self, image: np.ndarray, index: int, seconds: float, idle: bool) -> None:
        if idle:  # resting beside the box: only a slow sway, so motion drops at the boundary
            cx = 0.12 * self.width + 2 * np.sin(seconds * 1.5)
            cy = 0.80 * self.height
        else:
            x0, y0, x1, y1 = self._box_rect(index)
            mx, my, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            phase = 2 * np.pi * (0.3 + 0.25 * (index % 4)) * seconds  # operation-specific speed
            path = index % 4  # circle, horizontal sweep, vertical sweep, figure eight
            dx, dy = [
                (np.cos(phase), np.sin(phase)),
                (np.sin(phase), 0.1 * np.sin(3 * phase)),
                (0.1 * np.sin(3 * phase), np.sin(phase)),
                (np.sin(phase), np.sin(2 * phase) / 2),
            ][path]
            cx, cy = mx + 0.9 * ax * dx, my + 0.9 * ay * dy
        r = self.hand_radius
        top, left = max(0, round(cy) - r), max(0, round(cx) - r)
        ys, xs = np.ogrid[
            top : min(self.height, round(cy) + r + 1), left : min(self.width, round(cx) + r + 1)
        ]
        inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
        image[top : top + inside.shape[0], left : left + inside.shape[1]][inside] = (224, 172, 120)
