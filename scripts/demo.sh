#!/usr/bin/env bash
# The main job on the embedded default (SQLite + local folder + in-process tasks, no servers):
# synthesise a 5-video archive, build a tiny local Qwen2-VL (no model hub), label the archive
# and print the per-clip results. Everything lands in .packsight/demo (override: DEMO_DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/system-packages.sh venv  # python3-venv on a fresh Debian 12
bash scripts/install.sh
DEMO_DIR=${DEMO_DIR:-.packsight/demo}
export PATH="$PWD/.venv/bin:$PATH" PACKSIGHT_DATA_DIR="$DEMO_DIR"
export PACKSIGHT_MODEL="$DEMO_DIR/tiny-qwen2vl"
unset PACKSIGHT_BROKER_URL PACKSIGHT_DATABASE_URL PACKSIGHT_STORAGE

rm -rf "$DEMO_DIR/archive"
echo "==> packsight synth $DEMO_DIR/archive --videos 5"
packsight synth "$DEMO_DIR/archive" --videos 5
[[ -f $PACKSIGHT_MODEL/config.json ]] || packsight tiny-model "$PACKSIGHT_MODEL"
echo "==> packsight label $DEMO_DIR/archive"
packsight label "$DEMO_DIR/archive"
echo "==> packsight results --format jsonl"
packsight results --format jsonl
