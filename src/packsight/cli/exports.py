"""Clip records out of the CLI: JSON lines, CSV or an aligned table, filtered by video,
operation or confidence. A clip without a label is reported on stderr, not exported."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import click

CSV_COLUMNS = (
    "clip_id",
    "bucket",
    "video_key",
    "start_frame",
    "end_frame",
    "start_s",
    "end_s",
    "dominant_operation",
    "segment_start_frame",
    "segment_end_frame",
    "anticipated_next_operation",
    "confidence",
)


@dataclass(frozen=True)
class ClipFilter:
    video_key: str | None = None
    operation: str | None = None
    below: float | None = None  # confidence

    def admits(self, record: dict[str, Any]) -> bool:
        if self.video_key is not None and record["video_key"] != self.video_key:
            return False
        if self.operation is not None and record["dominant_operation"] != self.operation:
            return False
        return self.below is None or record["confidence"] < self.below


def write_records(
    records: Iterable[dict[str, Any]], out: IO[str], *, fmt: str, wanted: ClipFilter
) -> tuple[int, int]:
    """Write the labelled records `wanted` admits; (written, clips without a label seen)."""
    writer = csv.DictWriter(out, CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = unlabelled = 0
    for record in records:
        if record["error"] is not None:
            if wanted.video_key in (None, record["video_key"]):
                unlabelled += 1
                where = f"{record['clip_id']} ({record['video_key']})"
                click.echo(f"{where}: {record['error']}", err=True)
            continue
        if not wanted.admits(record):
            continue
        if writer is not None:
            writer.writerow(csv_row(record))
        elif fmt == "jsonl":
            out.write(json.dumps(record) + "\n")
        else:
            out.write(table_row(record) + "\n")
        written += 1
    return written, unlabelled


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    segment = record["temporal_segment"]
    row = {column: record.get(column) for column in CSV_COLUMNS}
    row["segment_start_frame"] = segment["start_frame"]
    row["segment_end_frame"] = segment["end_frame"]
    return row


def table_row(record: dict[str, Any]) -> str:
    seg = record["temporal_segment"]
    return (
        f"{record['clip_id']:<28} {record['dominant_operation']:<22} "
        f"{seg['start_frame']:>4}-{seg['end_frame']:<4} "
        f"{record['anticipated_next_operation']:<22} {record['confidence']:.3f}  "
        f"{record['video_key']} {record['start_s']:.1f}-{record['end_s']:.1f}s"
    )
