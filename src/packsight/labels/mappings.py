"""Mappings from one operation taxonomy to another (e.g. OpenPack's to the assignment's), as
data: a JSON file per mapping, checked against both taxonomies when loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from packsight.labels.annotations import AnnotationError, ArchiveAnnotations, LabelInterval
from packsight.labels.taxonomy import load_taxonomy

MAPPINGS = resources.files("packsight.labels") / "taxonomies" / "mappings"


@dataclass(frozen=True)
class OperationMapping:
    name: str
    source: str
    target: str
    operations: dict[str, str]
    description: str = ""


def builtin_mappings() -> list[str]:
    folder = MAPPINGS
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def load_mapping(name_or_path: str) -> OperationMapping:
    """A built-in mapping by name ("openpack-to-assignment") or a JSON file by path, checked
    against both taxonomies: every source operation mapped, every target known."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text()
    else:
        resource = MAPPINGS / f"{name_or_path}.json"
        if not resource.is_file():
            known = ", ".join(builtin_mappings())
            raise AnnotationError(f"unknown mapping {name_or_path!r}: use one of {known} or a path")
        text = resource.read_text()
    try:
        data = json.loads(text)
        mapping = OperationMapping(
            name=data["name"],
            source=data["source"],
            target=data["target"],
            operations=dict(data["operations"]),
            description=data.get("description", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"malformed mapping {name_or_path!r}: {exc}") from exc
    source, target = load_taxonomy(mapping.source), load_taxonomy(mapping.target)
    unmapped = [op for op in source.operations if op not in mapping.operations]
    strays = [op for op in mapping.operations.values() if op not in target.operations]
    if unmapped or strays:
        raise AnnotationError(
            f"mapping {mapping.name!r}: unmapped {source.name} operations {unmapped}, "
            f"targets not in {target.name}: {strays}"
        )
    return mapping


def map_operation(name: str, mapping: OperationMapping) -> str:
    try:
        return mapping.operations[name]
    except KeyError:
        raise AnnotationError(
            f"mapping {mapping.name!r} has no entry for {name!r} ({mapping.source} operations)"
        ) from None


def map_intervals(intervals: list[LabelInterval], mapping: OperationMapping) -> list[LabelInterval]:
    """Intervals in the mapping's target taxonomy. Neighbours that map to the same class merge:
    a boundary between two identical classes is not visible, and boundary-centred clip sampling
    should not be sent looking for it."""
    out: list[LabelInterval] = []
    for interval in intervals:
        operation = map_operation(interval.operation, mapping)
        if out and out[-1].operation == operation and out[-1].end_frame == interval.start_frame:
            out[-1] = LabelInterval(operation, out[-1].start_frame, interval.end_frame)
        else:
            out.append(LabelInterval(operation, interval.start_frame, interval.end_frame))
    return out


def map_archive(annotations: ArchiveAnnotations, mapping: OperationMapping) -> ArchiveAnnotations:
    """Every video's intervals in the mapping's target taxonomy."""
    if mapping.source != annotations.taxonomy:
        raise AnnotationError(
            f"mapping {mapping.name!r} maps from {mapping.source!r}, "
            f"but the annotations are in {annotations.taxonomy!r}"
        )
    videos = [(video, path, map_intervals(ivs, mapping)) for video, path, ivs in annotations.videos]
    return replace(annotations, videos=videos, taxonomy=mapping.target)
