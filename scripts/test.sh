#!/usr/bin/env bash
# The test command: system packages and .venv when missing or stale, then ruff, mypy and pytest
# (whose tests include the import rules between layers).
# Usage: bash scripts/test.sh [pytest args...]   (from anywhere; works on a fresh Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv

section() { printf '\n==> %s\n' "$*"; }

section "System packages"
bash scripts/system-packages.sh venv services browser

section "Python environment"
bash scripts/install.sh

section "Label Studio (for the review round trip)"
bash scripts/install-label-studio.sh

section "ruff check"
"$VENV/bin/ruff" check .

section "ruff format --check"
"$VENV/bin/ruff" format --check .

section "mypy (the installed package through its link tree, the tests and bench/)"
"$VENV/bin/mypy"

# Two test sessions side by side (pytest-xdist): while one waits on an outage or a worker, the
# other computes. Each test file runs whole in one session, in file order, so a module's
# fixtures (the chaos stack) start once. PACKSIGHT_TEST_WORKERS=0: everything in this process.
WORKERS=${PACKSIGHT_TEST_WORKERS:-2}
section "pytest -n $WORKERS $*"
exec "$VENV/bin/python" -m pytest -n "$WORKERS" --dist loadfile "$@"
