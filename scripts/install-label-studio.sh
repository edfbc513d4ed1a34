#!/usr/bin/env bash
# Label Studio for the review round-trip test: its own virtualenv (.venv-label-studio; its
# Django stack has pins of its own that must not meet packsight's), at the versions in
# constraints-label-studio.txt, and a migrated data folder (template/) that each test copies:
# a first start migrates its database for minutes, a copy starts in seconds. Skipped when up to
# date. Used by scripts/test.sh, after scripts/system-packages.sh venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-label-studio
STAMP="$VENV/.packsight-deps.sha256"
PYTHON=${PYTHON:-python3}
wanted=$(cat constraints-label-studio.txt "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$wanted" ]]; then
    echo "$VENV up to date"
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -c constraints-label-studio.txt label-studio
# The migrations, once: `version` applies them to the data folder and exits.
# (Its base data folder is set too: it would otherwise make one in the user's home.)
LATEST_VERSION_CHECK=false LABEL_STUDIO_BASE_DATA_DIR="$VENV/template" \
    "$VENV/bin/label-studio" version --data-dir "$VENV/template" >/dev/null
echo "$wanted" >"$STAMP"
echo "$VENV installed"
