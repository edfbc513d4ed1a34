#!/usr/bin/env bash
# Create or refresh .venv with packsight and its pinned dependencies (skipped when up to date).
# Used by scripts/demo.sh and scripts/test.sh (which first run scripts/system-packages.sh venv,
# so that python3 can make a venv). A broken .venv (one whose pip does not run, as a failed
# `python3 -m venv` leaves it) is made anew.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# torch goes in first and by exact version, the build the project is tested with: pip takes
# exactly these wheels, where a version range left to the resolver could pull another
# multi-gigabyte CUDA build. Keep in step with the vlm extra in pyproject.toml (and the GPU image,
# compose/Dockerfile.gpu).
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
VENV=.venv
STAMP="$VENV/.packsight-deps.sha256"
PYTHON=${PYTHON:-python3}

if [[ -e $VENV ]] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "$VENV is broken (its pip does not run): making it anew"
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"  # half made: no pip; the next run must not take it for a venv
        echo "error: $PYTHON -m venv failed; on Debian: bash scripts/system-packages.sh venv" >&2
        exit 1
    fi
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
