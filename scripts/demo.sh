#!/usr/bin/env bash
# The main job on the embedded default (SQLite + local folder + in-process tasks, no servers):
# synthesise a 5-video archive, build a tiny local Qwen2-VL (no model hub), label the archive
# and print the per-clip results. The job lands in packsight's per-user data folder, where every
# later command finds it (`packsight results`, from any directory); the demo's archive and model
# go to its demo/ sub-folder (override: DEMO_DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/system-packages.sh venv  # python3-venv on a fresh Debian 12
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
unset PACKSIGHT_BROKER_URL PACKSIGHT_DATABASE_URL PACKSIGHT_STORAGE
DATA_DIR=$(packsight info --data-dir)
DEMO_DIR=${DEMO_DIR:-$DATA_DIR/demo}
ARCHIVE="$DEMO_DIR/packsight-demo"  # a local folder is the bucket of its name
export PACKSIGHT_MODEL="$DEMO_DIR/tiny-qwen2vl"

rm -rf "$ARCHIVE"
echo "==> packsight synth $ARCHIVE --videos 5"
packsight synth "$ARCHIVE" --videos 5
[[ -f $PACKSIGHT_MODEL/config.json ]] || packsight tiny-model "$PACKSIGHT_MODEL"
echo "==> packsight label $ARCHIVE"
packsight label "$ARCHIVE"
echo "==> packsight results --format jsonl"
packsight results --format jsonl
echo "==> done: the job is in $DATA_DIR; 'packsight results' shows it again from any directory"
