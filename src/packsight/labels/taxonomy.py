"""Operation taxonomies are data: JSON files shipped in packsight/taxonomies or given by path."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


class TaxonomyError(ValueError):
    """A taxonomy file is missing or malformed."""


@dataclass(frozen=True)
class Taxonomy:
    name: str
    operations: tuple[str, ...]
    background: str
    unknown: str
    procedure: tuple[str, ...] = ()
    ids: dict[str, int] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if len(set(self.operations)) != len(self.operations) or not self.operations:
            raise TaxonomyError(f"taxonomy {self.name!r}: operations must be unique and non-empty")
        for role, op in (("background", self.background), ("unknown", self.unknown)):
            if op not in self.operations:
                raise TaxonomyError(f"taxonomy {self.name!r}: {role} {op!r} is not an operation")
        missing = [op for op in self.procedure if op not in self.operations]
        if missing:
            raise TaxonomyError(f"taxonomy {self.name!r}: procedure names unknown {missing}")

    def canonical(self, name: str) -> str | None:
        """The taxonomy's spelling of `name` (case and spacing insensitive), or None."""
        wanted = " ".join(name.split()).casefold()
        for op in self.operations:
            if op.casefold() == wanted:
                return op
        return None

    def index(self, name: str) -> int:
        return self.operations.index(name)


def builtin_taxonomies() -> list[str]:
    folder = resources.files("packsight.labels") / "taxonomies"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def load_taxonomy(name_or_path: str) -> Taxonomy:
    """Load a built-in taxonomy by name ("assignment", "openpack") or a JSON file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text()
    else:
        resource = resources.files("packsight.labels") / "taxonomies" / f"{name_or_path}.json"
        if not resource.is_file():
            known = ", ".join(builtin_taxonomies())
            raise TaxonomyError(
                f"unknown taxonomy {name_or_path!r}: use one of {known} or a .json path"
            )
        text = resource.read_text()
    try:
        data = json.loads(text)
        return Taxonomy(
            name=data["name"],
            operations=tuple(data["operations"]),
            background=data["background"],
            unknown=data["unknown"],
            procedure=tuple(data.get("procedure", ())),
            ids=dict(data.get("ids", {})),
            description=data.get("description", ""),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"malformed taxonomy {name_or_path!r}: {exc}") from exc
