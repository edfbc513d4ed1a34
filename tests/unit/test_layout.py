"""The layout's rules, checked: which layer imports which (the contracts in pyproject.toml,
enforced by import-linter over the installed package) and no module over 300 lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("src", "api", "workers", "models", "pipeline", "migrations", "tests", "bench", "scripts")
MAX_LINES = 300


def test_every_import_respects_the_layers() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT / "tests",  # not the repository root, whose folders would shadow the package
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_rules_cover_every_package() -> None:
    """A new top-level package must be placed in the layers (else nothing checks it)."""
    contracts = (ROOT / "pyproject.toml").read_text()
    packages = [
        p.name for p in (ROOT / "src" / "packsight").iterdir() if (p / "__init__.py").exists()
    ]
    packages += ["faults", "secret_rules"]
    packages += ["api", "workers", "models", "pipeline"]
    missing = [
        name for name in packages if f'"packsight.{name}' not in contracts and name != "migrations"
    ]
    assert not missing, f"packages outside the import contracts: {missing}"


def test_no_module_is_over_300_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for folder in CODE
        for path in (ROOT / folder).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_test_modules_have_names_of_their_own() -> None:
    """pytest imports test modules by their base name: two alike stop the whole collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
