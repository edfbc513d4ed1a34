#!/usr/bin/env bash
# Create or refresh .venv with packsight and its pinned dependencies (skipped when up to date).
# Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# torch goes in first and by exact version: this machine's pip has these wheels on local disk,
# while letting the project's resolve pick torch could download gigabytes. Keep in step with
# the vlm extra in pyproject.toml.
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
VENV=.venv
STAMP="$VENV/.packsight-deps.sha256"
PYTHON=${PYTHON:-python3}

if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -m venv "$VENV"
fi
constraints=()
[[ -f constraints.txt ]] && constraints=(-c constraints.txt)
# The install is a strict editable one (a tree of links to the sources, which type checkers and
# import-graph tools follow): a module added or removed needs a reinstall, so the list of
# modules is part of what the stamp covers.
modules() { find src api workers models pipeline migrations -name '*.py' -o -name '*.json' | sort; }
wanted=$(cat pyproject.toml ${constraints:+constraints.txt} <(echo "${TORCH_PINS[*]}") <(modules) \
    | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$wanted" ]]; then
    echo "$VENV up to date (pyproject.toml${constraints:+, constraints.txt} and the module list unchanged)"
else
    "$VENV/bin/python" -m pip install -q "${TORCH_PINS[@]}"
    rm -rf build/__editable__.*  # links to modules that may be gone
    "$VENV/bin/python" -m pip install -q "${constraints[@]}" \
        --config-settings editable_mode=strict -e '.[vlm,dev]'
    echo "$wanted" >"$STAMP"
    echo "$VENV installed"
fi
